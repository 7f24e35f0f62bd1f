/**
 * Local training: the sharded loader feeds onnxruntime's one-graph training
 * step (forward, loss, backward, SGD) with batches that are views over shared
 * memory — shard slices when sequential, arena blobs gathered by worker
 * processes when shuffled. The weights ping-pong between two sets of buffers
 * that the step writes into, so no step allocates.
 *
 * @example
 *   const r = await trainLocal(client, 'fmnist/train', { model: { kind: 'softmax', input: 'uint8', labels: 'uint8' } });
 *   const acc = await evaluate(r.spec, r.params, testX, testY);
 */
import type { TrellisClient } from '../client/client.js';
import { type Tensor, type TypedArray, tensor } from '../codecs/tensor.js';
import { invalidParameter } from '../errors.js';
import { openLoader } from '../loaders/dataset-loader.js';
import { inferenceModel, initParams, type ModelSpec, trainingStepModel } from './models.js';
import { ModelSession } from './ort-adapter.js';

export interface TrainOptions {
  model: ModelSpec;
  epochs?: number;
  batchSize?: number;
  /** Learning rate of the first epoch (default 0.3 softmax, 0.2 MLP). */
  lr?: number;
  /** Factor applied to the learning rate after each epoch (default 0.85). */
  decay?: number;
  seed?: number;
  /** Shuffle each epoch (default true); gathering runs in `workers` processes. */
  shuffle?: boolean;
  workers?: number;
  /** onnxruntime threads (default 1: deterministic, and fastest for these small GEMMs here). */
  threads?: number;
  /** Called after every epoch. */
  onEpoch?: (e: EpochReport) => void;
  /** Called after every step (for progress reports). */
  onStep?: (s: StepReport) => void;
  /** Stops training between steps: trainLocal rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface StepReport {
  epoch: number;
  /** Steps done so far, over all epochs (1 after the first). */
  step: number;
  /** Steps in the whole run (epochs × batches per epoch). */
  steps: number;
  /** The step's batch: its mean loss and its rows. */
  loss: number;
  rows: number;
  lastOfEpoch: boolean;
}

export interface EpochReport {
  epoch: number;
  loss: number;
  batches: number;
  samples: number;
  ms: number;
  /** Of which waiting for the loader. */
  waitMs: number;
  lr: number;
}

export interface TrainResult {
  spec: ModelSpec;
  params: Record<string, Tensor>;
  epochs: EpochReport[];
  /** Bytes the model read in place from shard views. */
  bytesFromViews: number;
  /** Bytes gathered by the loader's workers into arena batches (copies inside shared memory). */
  bytesGathered: number;
}

const defaults = (kind: ModelSpec['kind']) => (kind === 'softmax' ? { lr: 0.3, batch: 100 } : { lr: 0.2, batch: 64 });

/** Trains on the local shards of `dataset` (features [n, ...] and labels [n]). */
export async function trainLocal(client: TrellisClient, dataset: string, o: TrainOptions): Promise<TrainResult> {
  const d = defaults(o.model.kind);
  const epochs = o.epochs ?? 10;
  const batchSize = o.batchSize ?? d.batch;
  if (!Number.isSafeInteger(epochs) || epochs < 1) throw invalidParameter('epochs', 'a positive integer', epochs);
  const step = trainingStepModel(o.model);
  await using session = await ModelSession.fromBytes(step.bytes, { intraOpNumThreads: o.threads ?? 1 });
  let cur = initParams(o.model, o.seed ?? 1);
  let spare = initParams(o.model, o.seed ?? 1);
  const dtype = cur[step.params[0]].dtype;
  let rate = o.lr ?? d.lr;
  const reports: EpochReport[] = [];
  let bytesFromViews = 0;
  let bytesGathered = 0;

  await using loader = await openLoader(client, dataset, {
    batchSize,
    shuffle: o.shuffle ?? true,
    seed: o.seed ?? 1,
    epochs,
    workers: o.workers ?? 1,
  });
  let epoch = 0;
  let sum = 0;
  let batches = 0;
  let samples = 0;
  let waitMs = 0;
  let t0 = performance.now();
  let tWait = performance.now();
  let lr = scalar(dtype, rate);
  const steps = loader.batchesPerEpoch * epochs;
  let done = 0;
  o.signal?.throwIfAborted();
  for await (const b of loader) {
    o.signal?.throwIfAborted();
    waitMs += performance.now() - tWait;
    const rows = b.x.shape[0];
    const X: Tensor = { dtype: b.x.dtype, shape: [rows, b.x.data.length / rows], data: b.x.data };
    const into = Object.fromEntries(step.params.map((p) => [step.updates[p], spare[p]]));
    const out = await session.run({ X, labels: b.y, lr, ...cur }, into);
    [cur, spare] = [spare, cur];
    const loss = Number(out.loss.data[0]);
    sum += loss * rows;
    o.onStep?.({ epoch, step: ++done, steps, loss, rows, lastOfEpoch: b.lastOfEpoch });
    batches++;
    samples += rows;
    const bytes = b.x.data.byteLength + b.y.data.byteLength;
    if (b.source === 'view') bytesFromViews += bytes;
    else bytesGathered += bytes;
    if (b.lastOfEpoch) {
      const r: EpochReport = {
        epoch,
        loss: sum / samples,
        batches,
        samples,
        ms: performance.now() - t0,
        waitMs,
        lr: rate,
      };
      reports.push(r);
      o.onEpoch?.(r);
      epoch++;
      rate *= o.decay ?? 0.85;
      lr = scalar(dtype, rate);
      sum = 0;
      batches = 0;
      samples = 0;
      waitMs = 0;
      t0 = performance.now();
    }
    await b.release();
    tWait = performance.now();
  }
  return { spec: o.model, params: cur, epochs: reports, bytesFromViews, bytesGathered };
}

/** Accuracy of trained weights on features [n, ...] and labels [n]. */
export async function evaluate(
  spec: ModelSpec,
  params: Record<string, Tensor>,
  features: Tensor,
  labels: Tensor,
): Promise<number> {
  const n = labels.shape[0];
  await using s = await ModelSession.fromBytes(inferenceModel(spec, { weights: params }).bytes, {
    intraOpNumThreads: 1,
  });
  const X: Tensor = { dtype: features.dtype, shape: [n, features.data.length / n], data: features.data };
  const { pred } = await s.run({ X });
  let right = 0;
  const y = labels.data as TypedArray;
  for (let i = 0; i < n; i++) if (Number(pred.data[i]) === Number(y[i])) right++;
  return right / n;
}

function scalar(dtype: string, v: number): Tensor {
  return dtype === 'float64' ? tensor('float64', [], Float64Array.of(v)) : tensor('float32', [], Float32Array.of(v));
}
