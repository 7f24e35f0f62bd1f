/**
 * Local training: the sharded loader feeds batches that are views over shared
 * memory (shard slices when sequential, arena blobs gathered by worker
 * processes when shuffled) to the gradient graph (GradientStep), and the
 * optimizer updates one flat Float32Array of parameters in place, at the
 * rate the learning-rate rule gives for the step. No step allocates.
 *
 * @example
 *   const r = await trainLocal(client, 'fmnist/train', { model: { kind: 'softmax', input: 'uint8', labels: 'uint8' } });
 *   const acc = await evaluate(r.spec, r.params, testX, testY);
 */
import type { TrellisClient } from '../client/client.js';
import { type Tensor, type TypedArray, tensor } from '../codecs/tensor.js';
import { invalidParameter } from '../errors.js';
import { openLoader } from '../loaders/dataset-loader.js';
import { GradientStep, initFlatParams, paramTensors } from './gradient-step.js';
import { learningRate } from './lr-schedule.js';
import { fullSpec, inferenceModel, type ModelSpec } from './models.js';
import { Optimizer, type OptimizerSpec } from './optimizer.js';
import { ModelSession } from './ort-adapter.js';

export interface TrainOptions {
  model: ModelSpec;
  /** Default: trainDefaults(model.kind).epochs. */
  epochs?: number;
  batchSize?: number;
  /** Learning rate of the first epoch. */
  lr?: number;
  /** Factor applied to the learning rate after each epoch. */
  decay?: number;
  optimizer?: OptimizerSpec;
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

/** The hyperparameters trainLocal (and the train job kind, and `trellis demo`) use unless told otherwise. */
export interface TrainDefaults {
  epochs: number;
  batchSize: number;
  lr: number;
  decay: number;
  optimizer: OptimizerSpec;
}

/**
 * Chosen by measurement on Fashion-MNIST (docs/ARCHITECTURE.md, "Models"):
 * softmax regression reaches ~84.5% with plain SGD; the MLP (256-128) passes
 * the published 0.883 with Adam (SGD + Nesterov momentum fell short at the
 * same epochs).
 */
export function trainDefaults(kind: ModelSpec['kind']): TrainDefaults {
  return kind === 'softmax'
    ? { epochs: 15, batchSize: 100, lr: 0.3, decay: 0.85, optimizer: { kind: 'sgd' } }
    : { epochs: 10, batchSize: 128, lr: 0.002, decay: 0.7, optimizer: { kind: 'adam' } };
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
  /** The rate of the epoch's first step. */
  lr: number;
}

export interface TrainResult {
  spec: ModelSpec;
  /** The trained parameters by name, in the spec's dtype (views over `flat` for float32). */
  params: Record<string, Tensor>;
  /** The trained parameters as one Float32Array (paramLayout order). */
  flat: Float32Array;
  epochs: EpochReport[];
  /** Bytes the model read in place from shard views. */
  bytesFromViews: number;
  /** Bytes gathered by the loader's workers into arena batches (copies inside shared memory). */
  bytesGathered: number;
}

/** Trains on the local shards of `dataset` (features [n, ...] and labels [n]). */
export async function trainLocal(client: TrellisClient, dataset: string, o: TrainOptions): Promise<TrainResult> {
  const d = trainDefaults(o.model.kind);
  const epochs = o.epochs ?? d.epochs;
  const batchSize = o.batchSize ?? d.batchSize;
  if (!Number.isSafeInteger(epochs) || epochs < 1) throw invalidParameter('epochs', 'a positive integer', epochs);
  const spec = fullSpec(o.model);
  // The gradient graph computes in float32; float64 features are cast in it.
  const stepSpec =
    spec.dtype === 'float64' && spec.input === 'float'
      ? { ...spec, dtype: 'float32' as const, input: 'float64' as const }
      : spec;
  await using step = await GradientStep.create(stepSpec, { threads: o.threads ?? 1 });
  const params = initFlatParams(stepSpec, o.seed ?? 1);
  const grads = new Float32Array(step.layout.size);
  const optimizer = new Optimizer(o.optimizer ?? d.optimizer, step.layout.size);
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
  // One rank at the batch its rate was given for: the rule reduces to lr × decay^epoch.
  const schedule = {
    base: o.lr ?? d.lr,
    baseBatch: batchSize,
    batch: batchSize,
    decay: o.decay ?? d.decay,
    stepsPerEpoch: loader.batchesPerEpoch,
  };
  let epoch = 0;
  let sum = 0;
  let batches = 0;
  let samples = 0;
  let waitMs = 0;
  let t0 = performance.now();
  let tWait = performance.now();
  const steps = loader.batchesPerEpoch * epochs;
  let done = 0;
  let epochLr = learningRate(schedule, 0);
  o.signal?.throwIfAborted();
  for await (const b of loader) {
    o.signal?.throwIfAborted();
    waitMs += performance.now() - tWait;
    const rows = b.x.shape[0];
    const lr = learningRate(schedule, done);
    if (batches === 0) epochLr = lr;
    const lossSum = await step.run(params, b.x.data, b.y.data, rows, 1 / rows, grads);
    optimizer.step(params, grads, lr);
    sum += lossSum;
    // Counted apart from the report: `o.onStep?.(...)` skips evaluating its arguments when there is no callback.
    done++;
    o.onStep?.({ epoch, step: done, steps, loss: lossSum / rows, rows, lastOfEpoch: b.lastOfEpoch });
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
        lr: epochLr,
      };
      reports.push(r);
      o.onEpoch?.(r);
      epoch++;
      sum = 0;
      batches = 0;
      samples = 0;
      waitMs = 0;
      t0 = performance.now();
    }
    await b.release();
    tWait = performance.now();
  }
  return {
    spec: o.model,
    params: inSpecDType(spec.dtype, paramTensors(step.layout, params)),
    flat: params,
    epochs: reports,
    bytesFromViews,
    bytesGathered,
  };
}

/** float32 parameters as the spec's dtype (a float64 model's inference graph takes float64 weights). */
function inSpecDType(dtype: 'float32' | 'float64', p: Record<string, Tensor>): Record<string, Tensor> {
  if (dtype === 'float32') return p;
  return Object.fromEntries(
    Object.entries(p).map(([k, t]) => [k, tensor('float64', t.shape, Float64Array.from(t.data as Float32Array))]),
  );
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
