/**
 * The body of a train task (one rank), in its task host: trains the job's
 * model on the task's local shards through the sharded loader, the
 * gradient graph and the optimizer (trainLocal), reports progress, stores the trained
 * model and, with spec.evalDataset, measures test accuracy.
 *
 * Ranks: a task is one rank of `payload.rank.count` (1 in this version; the
 * data-parallel exchange of gradients between ranks is the next step), and
 * only rank 0 stores the model and evaluates it.
 *
 * The model's input and label types follow the stored shards: uint8 features
 * are fed as they are (the graph scales them by 1/255), float32/float64
 * features as floats (float64 cast to float32 in the graph); labels are
 * uint8, int32 or int64 class indices in [0, 10). The MLP takes any number
 * of hidden layers. Defaults are trainDefaults (those of `trellis demo`:
 * softmax regression 15 epochs of 100 rows with SGD, the MLP 10 epochs of
 * 128 with Adam), shuffled with seed 1, so a retry trains the same weights.
 */
import type { TrellisClient } from '../../client/client.js';
import type { Tensor } from '../../codecs/tensor.js';
import { TrellisError } from '../../errors.js';
import { type ShardPart, shardParts } from '../../loaders/shard.js';
import { inferenceModel, type ModelSpec } from '../../models/models.js';
import { putModel } from '../../models/ort-adapter.js';
import { evaluate, trainDefaults, trainLocal } from '../../models/trainer.js';
import type { JobProgress, TrainJobSpec } from '../job-types.js';
import type { TaskOutput, TaskPayload } from '../task-types.js';
import type { HostContext } from './host-context.js';

const CLASSES = 10;
/** A progress report every this many steps, and at the end of every epoch. */
export const PROGRESS_EVERY = 20;
const SEED = 1;

export async function trainTask(payload: TaskPayload, ctx: HostContext): Promise<TaskOutput> {
  const spec = payload.spec as TrainJobSpec;
  const rank = payload.rank ?? { index: 0, count: 1 };
  if (rank.count !== 1) {
    throw new TrellisError('ERR_UNSUPPORTED', `data-parallel training over ${rank.count} ranks is not built yet`);
  }
  const client = ctx.client;
  const model = await modelSpecFor(client, spec, ctx.localShards);
  const kind = model.kind;
  const epochs = spec.epochs ?? trainDefaults(kind).epochs;
  // The loader reads a dataset: this rank's shards, as an unnamed one of their own.
  const dataset = await client.createDataset(undefined, ctx.localShards, {
    meta: { job: payload.jobId, rank: rank.index },
  });
  const started = performance.now();
  let epochLoss = 0;
  let epochRows = 0;
  let seen = 0;
  let trained: Awaited<ReturnType<typeof trainLocal>>;
  try {
    trained = await trainLocal(client, dataset, {
      model,
      epochs,
      batchSize: spec.batchSize,
      lr: spec.learningRate,
      seed: SEED,
      workers: 1,
      signal: ctx.signal,
      onStep: (s) => {
        epochLoss += s.loss * s.rows;
        epochRows += s.rows;
        seen += s.rows;
        if (s.step % PROGRESS_EVERY === 0 || s.lastOfEpoch) {
          const ms = performance.now() - started;
          const p: JobProgress = {
            epoch: s.epoch,
            step: s.step,
            // the epoch's mean loss so far: smoother than one batch's
            loss: epochLoss / epochRows,
            samplesPerSec: (seen / ms) * 1000,
            etaMs: (ms / s.step) * (s.steps - s.step),
          };
          ctx.progress(p);
        }
        if (s.lastOfEpoch) {
          epochLoss = 0;
          epochRows = 0;
        }
      },
      onEpoch: (e) => ctx.log(`epoch ${e.epoch + 1}/${epochs}: loss ${e.loss.toFixed(4)} in ${e.ms.toFixed(0)} ms`),
    });
  } finally {
    await client.delete(dataset).catch(() => {});
  }
  const loss = trained.epochs[trained.epochs.length - 1]?.loss;
  if (rank.index !== 0) return { result: { metrics: { loss } } };

  ctx.signal.throwIfAborted();
  const name = `${payload.jobId}/model`;
  const id = await putModel(client, inferenceModel(model, { weights: trained.params }).bytes, { persist: true });
  // A retry trains the same weights; its model takes the name over from an earlier attempt's.
  await client.putName(name, id, { overwrite: true });
  const metrics: { accuracy?: number; loss?: number } = { loss };
  if (spec.evalDataset) metrics.accuracy = await accuracyOn(client, model, trained.params, spec.evalDataset, ctx);
  return { result: { model: name, metrics } };
}

/** The job's model spec, completed from the first shard: features per row, input and label dtypes. */
async function modelSpecFor(client: TrellisClient, spec: TrainJobSpec, shards: string[]): Promise<ModelSpec> {
  if (shards.length === 0) throw new TrellisError('ERR_BAD_REQUEST', 'a train task needs at least one shard');
  const m = spec.model;
  const shard = await client.get(shards[0]);
  try {
    const [part] = shardParts(shard, shards[0]);
    if (!part) throw new TrellisError('ERR_BAD_REQUEST', `shard ${shards[0]} has no rows`);
    const x = part.x.dtype;
    const y = part.y.dtype;
    if (x !== 'uint8' && x !== 'float32' && x !== 'float64') {
      throw new TrellisError('ERR_UNSUPPORTED', `features of dtype ${x}: training takes uint8, float32 or float64`);
    }
    if (y !== 'uint8' && y !== 'int32' && y !== 'int64') {
      throw new TrellisError('ERR_UNSUPPORTED', `labels of dtype ${y}: training takes uint8, int32 or int64`);
    }
    return {
      kind: m.kind,
      ...(m.kind === 'mlp' ? { hidden: m.hidden.slice() } : {}),
      features: part.x.data.length / part.rows,
      classes: CLASSES,
      dtype: 'float32',
      input: x,
      labels: y,
    };
  } finally {
    await client.release(shards[0]);
  }
}

/**
 * Test accuracy over a dataset in the shard format (e.g. written by
 * writeDataset): its shards on other nodes are migrated here first.
 */
async function accuracyOn(
  client: TrellisClient,
  model: ModelSpec,
  params: Record<string, Tensor>,
  name: string,
  ctx: HostContext,
): Promise<number> {
  const loc = await client.locate(name);
  const ids: string[] = [];
  let moved = 0;
  for (const s of loc.shards) {
    if (s.instanceId === client.instanceId) ids.push(s.id);
    else {
      ids.push(await client.migrate(s.id));
      moved += s.nbytes;
    }
  }
  if (moved > 0) ctx.log(`evaluation: moved ${moved} bytes of ${name} to this node`);
  const values = await client.getMany(ids);
  try {
    let right = 0;
    let rows = 0;
    const parts: ShardPart[] = values.flatMap((v, i) => shardParts(v, ids[i]));
    for (const p of parts) {
      ctx.signal.throwIfAborted();
      // evaluate gives a ratio; counting back to whole rows keeps the total exact
      right += Math.round((await evaluate(model, params, p.x, p.y)) * p.rows);
      rows += p.rows;
    }
    if (rows === 0) throw new TrellisError('ERR_BAD_REQUEST', `evaluation dataset ${name} has no rows`);
    return right / rows;
  } finally {
    await Promise.all(ids.map((id) => client.release(id)));
  }
}
