/**
 * Where a map or infer task's output goes: a new object on the task's node,
 * persisted (so the engine can build the output dataset from any node) and
 * named `<job id>/output/<task index>`. The name makes retries idempotent: a
 * retry on the node that already holds a complete output from an earlier
 * attempt (it died or lost its lock after storing) returns that object
 * instead of computing and storing it again; a retry elsewhere stores its
 * own and moves the name to it. Outputs are the same either way, since a
 * task's result depends only on its inputs.
 */
import type { TrellisClient } from '../../client/client.js';
import { isTrellisError, TrellisError } from '../../errors.js';
import type { TaskPayload } from '../task-types.js';
import type { HostContext } from './host-context.js';

/**
 * Before a per-shard task runs: its one local shard, its output's name, and
 * an earlier attempt's output on this node when there is one (the task then
 * returns that and runs nothing).
 */
export async function shardTaskStart(
  payload: TaskPayload,
  ctx: HostContext,
  what: string,
): Promise<{ shardId: string; name: string; earlier?: string }> {
  if (ctx.localShards.length !== 1) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `a ${payload.spec.kind} task reads one shard, not ${ctx.localShards.length}`,
    );
  }
  const name = `${payload.jobId}/output/${payload.index}`;
  const earlier = await earlierOutput(ctx.client, name);
  if (earlier) ctx.log(`output ${earlier} of an earlier attempt is on this node; not running ${what} again`);
  return { shardId: ctx.localShards[0], name, earlier };
}

/** The id of an earlier attempt's output when it is on this node's store, else undefined. */
async function earlierOutput(client: TrellisClient, name: string): Promise<string | undefined> {
  let id: string;
  try {
    id = await client.getName(name);
  } catch (e) {
    if (isTrellisError(e, 'ERR_NAME_NOT_FOUND')) return undefined;
    throw e;
  }
  try {
    await client.get(id);
  } catch (e) {
    // elsewhere (remote, lost) or deleted: this attempt makes its own
    if (isTrellisError(e)) return undefined;
    throw e;
  }
  await client.release(id);
  return id;
}

/** Binds the output name to a stored, persisted output (moving it from an earlier attempt's). */
export async function nameOutput(client: TrellisClient, name: string, id: string): Promise<string> {
  await client.putName(name, id, { overwrite: true });
  return id;
}
