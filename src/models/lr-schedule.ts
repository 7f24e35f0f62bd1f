/**
 * The learning-rate rule for a batch size (Goyal et al. 2017, "Accurate,
 * Large Minibatch SGD", arXiv:1706.02677):
 *
 * - Linear scaling: a batch k times bigger takes a rate k times bigger,
 *   target = base × batch / baseBatch, where `base` is the rate that works
 *   at `baseBatch`. N data-parallel ranks of B rows are one batch of N·B.
 * - Gradual warmup: over the first `warmupSteps` steps the rate climbs
 *   linearly from `base` to the target (step 0 runs at base), so a large
 *   batch does not diverge early while the weights change fast.
 * - Then a step decay per epoch: × decay^epoch, epoch = floor(step /
 *   stepsPerEpoch) (the decay applies during warmup too, so the curve has no
 *   jump where warmup ends).
 *
 * lr(step) = (step < warmupSteps ? base + (target − base)·step/warmupSteps : target)
 *            × decay^floor(step / stepsPerEpoch)
 *
 * @example
 *   // 3 ranks of 64 rows, tuned at 64: target 3 × base after 2 epochs of warmup
 *   learningRate({ base: 0.05, baseBatch: 64, batch: 192, warmupSteps: 625, decay: 0.9, stepsPerEpoch: 312 }, step)
 */
import { invalidParameter } from '../errors.js';

export interface LrSchedule {
  /** The rate tuned at baseBatch. */
  base: number;
  baseBatch: number;
  /** The batch actually used (over all ranks). */
  batch: number;
  /** Steps of linear warmup from base to the scaled rate (0 default: none). */
  warmupSteps?: number;
  /** Factor per epoch (1 default: none). */
  decay?: number;
  /** Needed when decay is not 1. */
  stepsPerEpoch?: number;
}

/** The learning rate of step `step` (0-based, counted over the whole run). */
export function learningRate(s: LrSchedule, step: number): number {
  const positive = (name: string, v: unknown) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw invalidParameter(name, 'a number > 0', v);
  };
  positive('schedule.base', s?.base);
  positive('schedule.baseBatch', s.baseBatch);
  positive('schedule.batch', s.batch);
  const warmup = s.warmupSteps ?? 0;
  if (!Number.isSafeInteger(warmup) || warmup < 0)
    throw invalidParameter('schedule.warmupSteps', 'an integer >= 0', warmup);
  const decay = s.decay ?? 1;
  if (typeof decay !== 'number' || !Number.isFinite(decay) || decay <= 0 || decay > 1)
    throw invalidParameter('schedule.decay', 'a number in (0, 1]', decay);
  if (decay !== 1 && (!Number.isSafeInteger(s.stepsPerEpoch) || (s.stepsPerEpoch as number) < 1))
    throw invalidParameter('schedule.stepsPerEpoch', 'a positive integer (decay is set)', s.stepsPerEpoch);
  if (!Number.isSafeInteger(step) || step < 0) throw invalidParameter('step', 'an integer >= 0', step);
  const target = (s.base * s.batch) / s.baseBatch;
  const warm = step < warmup ? s.base + ((target - s.base) * step) / warmup : target;
  return decay === 1 ? warm : warm * decay ** Math.floor(step / (s.stepsPerEpoch as number));
}

/**
 * The line a data-parallel job logs when its ranks change the effective
 * batch away from the one its rate was tuned for (null when they do not):
 * N ranks of B rows train like one batch of N·B, so the rule above scales
 * the rate by N·B / baseBatch.
 */
export function effectiveBatchWarning(o: { batch: number; ranks: number; baseBatch: number }): string | null {
  for (const k of ['batch', 'ranks', 'baseBatch'] as const) {
    if (!Number.isSafeInteger(o?.[k]) || o[k] < 1) throw invalidParameter(k, 'a positive integer', o?.[k]);
  }
  const effective = o.batch * o.ranks;
  if (effective === o.baseBatch) return null;
  const factor = Number((effective / o.baseBatch).toPrecision(4));
  return (
    `${o.ranks} rank${o.ranks === 1 ? '' : 's'} of ${o.batch} rows ${o.ranks === 1 ? 'makes' : 'make'} an effective batch of ${effective}, ` +
    `not the ${o.baseBatch} the learning rate was set for: the linear scaling rule multiplies it by ${factor}`
  );
}
