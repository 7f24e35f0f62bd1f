/**
 * The effective batch of a data-parallel train job and its learning-rate
 * rule. N ranks of batch B step like one rank of batch N·B: each rank's
 * gradient is scaled by 1/(N·B) and the ranks' gradients are summed, so the
 * update is that of the mean loss over the global batch. Following Goyal et
 * al. 2017 ("Accurate, Large Minibatch SGD"), the rate `learningRate` tuned
 * for `baseBatch` is scaled linearly to the effective batch (lr · N·B /
 * baseBatch) and reached through a linear warm-up of `warmupSteps` steps,
 * which keeps the first steps of a large batch from diverging.
 */
import { trainDefaults } from '../models/trainer.js';
import type { TrainJobSpec } from './job-types.js';

export interface BatchRule {
  batchSize: number;
  effectiveBatch: number;
  baseBatch: number;
  /** learningRate × effectiveBatch / baseBatch. */
  lr: number;
  baseLr: number;
  /** 0 when the rate is not scaled. */
  warmupSteps: number;
}

/** The rule for `ranks` ranks; `stepsPerEpoch` sets the default warm-up (one epoch, at most 200 steps). */
export function batchRule(spec: TrainJobSpec, ranks: number, stepsPerEpoch = 200): BatchRule {
  const d = trainDefaults(spec.model.kind);
  const batchSize = spec.batchSize ?? d.batchSize;
  const baseBatch = spec.baseBatch ?? batchSize;
  const effectiveBatch = ranks * batchSize;
  const baseLr = spec.learningRate ?? d.lr;
  const scaled = effectiveBatch !== baseBatch;
  return {
    batchSize,
    effectiveBatch,
    baseBatch,
    baseLr,
    lr: (baseLr * effectiveBatch) / baseBatch,
    warmupSteps: scaled ? (spec.warmupSteps ?? Math.min(200, stepsPerEpoch)) : (spec.warmupSteps ?? 0),
  };
}

/** The job's warning when its ranks make the effective batch differ from the batch its rate was tuned for. */
export function effectiveBatchWarning(spec: TrainJobSpec, ranks: number): string | undefined {
  const r = batchRule(spec, ranks);
  if (r.effectiveBatch === r.baseBatch) return undefined;
  const warm = spec.warmupSteps !== undefined ? `${spec.warmupSteps} steps` : 'the first epoch (at most 200 steps)';
  return (
    `effective batch ${r.effectiveBatch} (${ranks} rank${ranks === 1 ? '' : 's'} x batch ${r.batchSize}) differs from baseBatch ${r.baseBatch}: ` +
    `learning rate scaled ${(r.effectiveBatch / r.baseBatch).toFixed(2)}x from ${r.baseLr} to ${+r.lr.toPrecision(4)} ` +
    `with a linear warm-up over ${warm} (Goyal et al. 2017); accuracy may differ from ${r.baseBatch}-row batches`
  );
}
