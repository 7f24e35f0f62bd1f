/**
 * The body of a train task (one rank of `payload.rank.count`), in its task
 * host: completes the model spec from the shards, trains as one rank of the
 * job's group (train-rank.ts: the sharded loader, the gradient graph, the
 * gradients summed through the stores, the optimizer, checkpoints), and on
 * rank 0 stores the trained model and, with spec.evalDataset, measures test
 * accuracy. Every rank reports its figures (rows, steps, time per step, a
 * hash of its final parameters); the job's result lists them in rank order.
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
import { copyOn } from '../../client/shard-copies.js';
import type { Tensor } from '../../codecs/tensor.js';
import { TrellisError } from '../../errors.js';
import { type ShardPart, shardParts } from '../../loaders/shard.js';
import { paramTensors } from '../../models/gradient-step.js';
import { inferenceModel, type ModelSpec } from '../../models/models.js';
import { putModel } from '../../models/ort-adapter.js';
import { evaluate } from '../../models/trainer.js';
import type { TrainJobSpec } from '../job-types.js';
import type { TaskOutput, TaskPayload } from '../task-types.js';
import type { HostContext } from './host-context.js';
import { dropCheckpoint } from './train-checkpoint.js';
import { dropOldRankDatasets, trainRank } from './train-rank.js';

const CLASSES = 10;

export async function trainTask(payload: TaskPayload, ctx: HostContext): Promise<TaskOutput> {
  const spec = payload.spec as TrainJobSpec;
  const rank = payload.rank ?? { index: 0, count: 1 };
  const client = ctx.client;
  const model = await modelSpecFor(client, spec, ctx.localShards);
  const out = await trainRank(payload, ctx, model);
  const loss = out.loss;
  if (rank.index !== 0) return { result: { ranks: [out.rank] } };

  ctx.signal.throwIfAborted();
  const weights = paramTensors(out.layout, out.params);
  const name = `${payload.jobId}/model`;
  const id = await putModel(client, inferenceModel(model, { weights }).bytes, { persist: true });
  // A restarted group trains to the same kind of weights; its model takes the name over from an earlier one's.
  await client.putName(name, id, { overwrite: true });
  const metrics: { accuracy?: number; loss?: number } = loss === undefined ? {} : { loss };
  if (spec.evalDataset) metrics.accuracy = await accuracyOn(client, model, weights, spec.evalDataset, ctx);
  await dropCheckpoint(client, payload.jobId);
  await dropOldRankDatasets(client, payload.jobId, payload.gang?.attempt ?? 1).catch(() => {});
  return { result: { model: name, metrics, ranks: [out.rank], effectiveBatch: out.effectiveBatch } };
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
    const here = copyOn(s, client.instanceId);
    if (here) ids.push(here.id);
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
