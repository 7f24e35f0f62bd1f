/**
 * A train job's checkpoint: one float32 tensor in rank 0's store, persisted
 * (so any node finds it through the metadata service and migrates it over
 * RPC once rank 0's agent is gone) and named `<job id>/checkpoint`. It holds
 * a small header (the step, the loader position), the parameters and the
 * optimizer's buffers, laid out exactly like the buffer rank 0 broadcasts at
 * the start of a group, so resuming is one read and one broadcast.
 *
 * The name moves to a new checkpoint only once that one is sealed and
 * persisted, and the previous one is deleted after: a rank 0 that dies while
 * writing leaves the previous checkpoint whole. Each checkpoint object also
 * carries a name of its own from its seal, so none is left behind by a rank
 * 0 that died between its seal and the deletes (after a restart on other
 * nodes, the old node kept such copies for good).
 *
 * On a cluster the checkpoint is kept as two copies on distinct stores
 * (replicas), so the loss of rank 0's whole node, store included, leaves one
 * to resume from; a single store keeps just its own.
 */
import { randomBytes } from 'node:crypto';
import type { TrellisClient } from '../../client/client.js';
import { RemoteClient } from '../../client/remote-client.js';
import { copyOn } from '../../client/shard-copies.js';
import type { Tensor } from '../../codecs/tensor.js';
import { isTrellisError, TrellisError } from '../../errors.js';

/** Floats before the parameters: magic, version, step, epoch, index, parameter count, optimizer floats, spare. */
export const HEADER = 8;
const MAGIC = 0x7e11;
const VERSION = 1;

export interface Position {
  /** Steps done (the optimizer's step count too). */
  step: number;
  /** The loader position of the next batch. */
  epoch: number;
  index: number;
}

export const checkpointName = (jobId: string): string => `${jobId}/checkpoint`;

/** Copies of a checkpoint kept on a cluster: one node's loss leaves one. */
const CHECKPOINT_COPIES = 2;

/** A state buffer: header, then `params` floats, then `extra` optimizer floats. */
export function stateBuffer(params: number, extra: number): Float32Array {
  const b = new Float32Array(HEADER + params + extra);
  b.set([MAGIC, VERSION, 0, 0, 0, params, extra, 0]);
  return b;
}

export function readPosition(state: Float32Array): Position {
  return { step: state[2], epoch: state[3], index: state[4] };
}

export function writePosition(state: Float32Array, p: Position): void {
  state[2] = p.step;
  state[3] = p.epoch;
  state[4] = p.index;
}

/** The names every checkpoint object of a job gets when it is sealed: `<job id>/checkpoint@<step>.<random>`. */
const copyPrefix = (jobId: string): string => `${jobId}/checkpoint@`;

/**
 * Writes `state` as the job's new checkpoint; once that one holds the
 * name, every other checkpoint object of the job goes (every copy).
 */
export async function saveCheckpoint(client: TrellisClient, jobId: string, state: Float32Array): Promise<string> {
  const name = checkpointName(jobId);
  const w = await client.createTensor('float32', [state.length]);
  w.data.set(state);
  // Named in the seal itself (which persists it): a rank 0 killed before the job's name moves to this
  // object leaves a name behind, by which the next save (of whichever group) finds and deletes it.
  const id = await w.seal({
    name: `${copyPrefix(jobId)}${readPosition(state).step}.${randomBytes(4).toString('hex')}`,
  });
  try {
    await client.persist(id, { replicas: CHECKPOINT_COPIES });
  } catch (e) {
    // One store (or none other with room): the checkpoint lives where rank 0 does, as before.
    if (!isTrellisError(e, 'ERR_REPLICAS_UNAVAILABLE')) throw e;
  }
  await client.putName(name, id, { overwrite: true });
  await dropOthers(client, jobId, id);
  return id;
}

/**
 * Deletes the job's checkpoint objects other than `keep`: the previous one,
 * and any that a rank 0 killed mid-save left (an old group's, after a
 * restart on other nodes), with every copy, wherever they are.
 */
async function dropOthers(client: TrellisClient, jobId: string, keep: string | undefined): Promise<void> {
  const names = await client.listNames(copyPrefix(jobId));
  for (const [n, id] of Object.entries(names)) {
    if (id === keep) continue;
    // Its name stays while the object could not be deleted, for the next save to try again.
    if (await deleteAnywhere(client, id)) await client.dropName(n).catch(() => {});
  }
}

/**
 * Deletes an object wherever it is: from here when this store holds it or
 * it is replicated (every copy goes), else over RPC on the store that holds
 * it — one a rank 0 was killed before replicating lives on its old store
 * alone. True when it is gone (or its store is, with it).
 */
async function deleteAnywhere(client: TrellisClient, id: string): Promise<boolean> {
  try {
    await client.delete(id);
    return true;
  } catch (e) {
    if (isTrellisError(e, 'ERR_OBJECT_NOT_FOUND') || isTrellisError(e, 'ERR_OBJECT_LOST')) return true;
    if (!isTrellisError(e, 'ERR_OBJECT_REMOTE')) return false;
  }
  try {
    const holder = (await client.locate(id)).shards[0]?.instanceId;
    const rpc = (await client.instances()).find((i) => i.instanceId === holder)?.rpc;
    if (!rpc) return false;
    const remote = await RemoteClient.open({ rpc: `${rpc.host}:${rpc.port}`, name: 'checkpoint cleanup' });
    try {
      await remote.delete(id);
    } finally {
      await remote.close();
    }
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads the job's checkpoint into `state` (same layout) and answers its
 * position, or undefined when the job has none yet. One on another store is
 * migrated here first; the copy is deleted after reading.
 */
export async function loadCheckpoint(
  client: TrellisClient,
  jobId: string,
  state: Float32Array,
): Promise<Position | undefined> {
  let id: string;
  try {
    id = await client.getName(checkpointName(jobId));
  } catch (e) {
    if (isTrellisError(e, 'ERR_NAME_NOT_FOUND')) return undefined;
    throw e;
  }
  const loc = await client.locate(id);
  const shard = loc.shards[0];
  // A copy here (the primary or a replica) is read in place; anything else is migrated and deleted after.
  const here = shard ? copyOn(shard, client.instanceId)?.id : undefined;
  const local = here ?? (await client.migrate(id));
  try {
    const t = (await client.get(local)) as Tensor;
    try {
      const data = t.data as Float32Array;
      if (t.dtype !== 'float32' || data.length !== state.length || data[0] !== MAGIC || data[1] !== VERSION) {
        throw new TrellisError(
          'ERR_SIZE_MISMATCH',
          `checkpoint ${id} of job ${jobId} does not match this model (${data.length} floats, ${state.length} expected)`,
        );
      }
      state.set(data);
    } finally {
      await client.release(local);
    }
  } finally {
    if (here === undefined && local !== id) await client.delete(local).catch(() => {});
  }
  return readPosition(state);
}

/** Drops the job's checkpoint once it is done with it (one on another store keeps its object there). */
export async function dropCheckpoint(client: TrellisClient, jobId: string): Promise<void> {
  const name = checkpointName(jobId);
  let id: string;
  try {
    id = await client.getName(name);
  } catch {
    await dropOthers(client, jobId, undefined).catch(() => {});
    return;
  }
  await client.dropName(name).catch(() => {});
  await client.delete(id).catch(() => {});
  await dropOthers(client, jobId, undefined).catch(() => {});
}
