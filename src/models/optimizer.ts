/**
 * The parameter update, in plain JS over flat Float32Arrays: SGD (with
 * optional momentum, Nesterov, L2 weight decay) and Adam. Every rank of a
 * data-parallel group runs it on the same summed gradient, so it must give
 * bit-identical results everywhere: one element at a time, in index order,
 * with no randomness and nothing that depends on timing or threads (double
 * arithmetic rounded to float32 on store is the same on every IEEE machine).
 *
 * Semantics follow PyTorch's `torch.optim.SGD` (dampening 0) and
 * `torch.optim.Adam` (L2 weight decay added to the gradient, bias-corrected
 * moments):
 *   SGD:  g ← g + wd·p;  v ← μ·v + g;  p ← p − lr·(nesterov ? g + μ·v : v)
 *   Adam: g ← g + wd·p;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
 *         p ← p − lr · (m / (1−β1^t)) / (√(v / (1−β2^t)) + ε)
 *
 * @example
 *   const opt = new Optimizer({ kind: 'sgd', momentum: 0.9 }, params.length);
 *   opt.step(params, grads, 0.05);
 *   const { step, buffers } = opt.state();   // for a checkpoint
 */
import { invalidParameter } from '../errors.js';

export type OptimizerSpec =
  | { kind: 'sgd'; momentum?: number; nesterov?: boolean; weightDecay?: number }
  | { kind: 'adam'; beta1?: number; beta2?: number; eps?: number; weightDecay?: number };

/** An optimizer's state: steps taken and its buffers (SGD with momentum: [velocity]; Adam: [m, v]). */
export interface OptimizerState {
  step: number;
  buffers: Float32Array[];
}

export class Optimizer {
  private steps = 0;
  private readonly buffers: Float32Array[];
  private readonly spec: Required<OptimizerSpec>;

  constructor(
    spec: OptimizerSpec,
    readonly size: number,
  ) {
    if (!Number.isSafeInteger(size) || size < 1) throw invalidParameter('size', 'a positive integer', size);
    this.spec = checkSpec(spec);
    const n = this.spec.kind === 'adam' ? 2 : this.spec.momentum > 0 ? 1 : 0;
    this.buffers = Array.from({ length: n }, () => new Float32Array(size));
  }

  /** Applies one update to `params` in place, from `grads` (both `size` floats) at learning rate `lr`. */
  step(params: Float32Array, grads: Float32Array, lr: number): void {
    const n = this.size;
    if (!(params instanceof Float32Array) || params.length !== n)
      throw invalidParameter('params', `a Float32Array of ${n} floats`, params);
    if (!(grads instanceof Float32Array) || grads.length !== n)
      throw invalidParameter('grads', `a Float32Array of ${n} floats`, grads);
    if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0)
      throw invalidParameter('lr', 'a finite number >= 0', lr);
    this.steps++;
    const s = this.spec;
    if (s.kind === 'sgd') {
      if (this.buffers.length === 0) sgd(params, grads, lr, s.weightDecay);
      else momentum(params, grads, this.buffers[0], lr, s.momentum, s.nesterov, s.weightDecay);
    } else {
      adam(params, grads, this.buffers[0], this.buffers[1], lr, s, this.steps);
    }
  }

  /** Steps taken and the live buffers (views, not copies: copy them to keep a snapshot). */
  state(): OptimizerState {
    return { step: this.steps, buffers: this.buffers.slice() };
  }

  /** Restores a state taken by state() (e.g. from a checkpoint); the buffers are copied in. */
  load(s: OptimizerState): void {
    if (!s || !Number.isSafeInteger(s.step) || s.step < 0)
      throw invalidParameter('state.step', 'a non-negative integer', s?.step);
    if (!Array.isArray(s.buffers) || s.buffers.length !== this.buffers.length)
      throw invalidParameter('state.buffers', `${this.buffers.length} Float32Arrays`, s.buffers);
    s.buffers.forEach((b, i) => {
      if (!(b instanceof Float32Array) || b.length !== this.size)
        throw invalidParameter(`state.buffers[${i}]`, `a Float32Array of ${this.size} floats`, b);
    });
    s.buffers.forEach((b, i) => {
      this.buffers[i].set(b);
    });
    this.steps = s.step;
  }
}

// One loop per rule, each a small monomorphic function, so V8 compiles it tight.

function sgd(p: Float32Array, g: Float32Array, lr: number, wd: number): void {
  for (let i = 0; i < p.length; i++) p[i] -= lr * (g[i] + wd * p[i]);
}

function momentum(
  p: Float32Array,
  g: Float32Array,
  v: Float32Array,
  lr: number,
  mu: number,
  nesterov: boolean,
  wd: number,
): void {
  if (nesterov) {
    for (let i = 0; i < p.length; i++) {
      const gi = g[i] + wd * p[i];
      // The stored (float32) velocity, as PyTorch uses it.
      const vi = Math.fround(mu * v[i] + gi);
      v[i] = vi;
      p[i] -= lr * (gi + mu * vi);
    }
    return;
  }
  for (let i = 0; i < p.length; i++) {
    const vi = Math.fround(mu * v[i] + g[i] + wd * p[i]);
    v[i] = vi;
    p[i] -= lr * vi;
  }
}

function adam(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  lr: number,
  s: { beta1: number; beta2: number; eps: number; weightDecay: number },
  t: number,
): void {
  const { beta1: b1, beta2: b2, eps, weightDecay: wd } = s;
  const step = lr / (1 - b1 ** t);
  const unbias = 1 / (1 - b2 ** t);
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] + wd * p[i];
    const mi = Math.fround(b1 * m[i] + (1 - b1) * gi);
    const vi = Math.fround(b2 * v[i] + (1 - b2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] -= (step * mi) / (Math.sqrt(vi * unbias) + eps);
  }
}

function checkSpec(spec: OptimizerSpec): Required<OptimizerSpec> {
  const num = (name: string, v: unknown, ok: (x: number) => boolean, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw invalidParameter(`optimizer.${name}`, what, v);
    return v;
  };
  const unit = (x: number) => x >= 0 && x < 1;
  if (spec?.kind === 'sgd') {
    if (spec.nesterov !== undefined && typeof spec.nesterov !== 'boolean')
      throw invalidParameter('optimizer.nesterov', 'a boolean', spec.nesterov);
    const momentum = num('momentum', spec.momentum ?? 0, unit, 'a number in [0, 1)');
    if (spec.nesterov && momentum === 0)
      throw invalidParameter('optimizer.momentum', 'a number in (0, 1) with nesterov', momentum);
    return {
      kind: 'sgd',
      momentum,
      nesterov: spec.nesterov ?? false,
      weightDecay: num('weightDecay', spec.weightDecay ?? 0, (x) => x >= 0, 'a number >= 0'),
    };
  }
  if (spec?.kind === 'adam') {
    return {
      kind: 'adam',
      beta1: num('beta1', spec.beta1 ?? 0.9, unit, 'a number in [0, 1)'),
      beta2: num('beta2', spec.beta2 ?? 0.999, unit, 'a number in [0, 1)'),
      eps: num('eps', spec.eps ?? 1e-8, (x) => x > 0, 'a number > 0'),
      weightDecay: num('weightDecay', spec.weightDecay ?? 0, (x) => x >= 0, 'a number >= 0'),
    };
  }
  throw invalidParameter('optimizer.kind', "'sgd' or 'adam'", (spec as { kind?: unknown })?.kind);
}
