/**
 * The optimizers (exact updates on values chosen to be exact in float32,
 * Adam against a float64 transcription of PyTorch's algorithm, bit-identical
 * replays, checkpoint state) and the learning-rate rule (Goyal et al. 2017).
 */
import { effectiveBatchWarning, learningRate, Optimizer, type OptimizerSpec } from 'trellis/models';
import { describe, expect, it } from 'vitest';

const fail = (fn: () => unknown) => {
  try {
    fn();
    return null;
  } catch (e) {
    const err = e as { code: string; message: string };
    return { code: err.code, message: err.message };
  }
};

describe('Optimizer', () => {
  it('plain SGD: p ← p − lr·g, with L2 weight decay added to the gradient', () => {
    const p = Float32Array.of(1, -2);
    new Optimizer({ kind: 'sgd' }, 2).step(p, Float32Array.of(0.5, 0.25), 0.5);
    expect(p).toEqual(Float32Array.of(0.75, -2.125));
    const q = Float32Array.of(1, -2);
    new Optimizer({ kind: 'sgd', weightDecay: 0.5 }, 2).step(q, Float32Array.of(0.5, 0.25), 0.5);
    // g + 0.5·p = [1, -0.75]
    expect(q).toEqual(Float32Array.of(0.5, -1.625));
  });

  it('SGD with momentum and with Nesterov momentum, two steps', () => {
    const g = Float32Array.of(0.5, -1);
    const p = Float32Array.of(1, 1);
    const m = new Optimizer({ kind: 'sgd', momentum: 0.5 }, 2);
    m.step(p, g, 0.5); // v = g; p -= 0.5 v
    expect(p).toEqual(Float32Array.of(0.75, 1.5));
    m.step(p, g, 0.5); // v = 0.5 v + g = [0.75, -1.5]
    expect(p).toEqual(Float32Array.of(0.375, 2.25));
    expect(m.state()).toEqual({ step: 2, buffers: [Float32Array.of(0.75, -1.5)] });

    const n = new Optimizer({ kind: 'sgd', momentum: 0.5, nesterov: true }, 2);
    const q = Float32Array.of(1, 1);
    n.step(q, g, 0.5); // v = g; p -= 0.5 (g + 0.5 v) = 0.5 · 1.5 g
    expect(q).toEqual(Float32Array.of(0.625, 1.75));
    n.step(q, g, 0.5); // v = [0.75, -1.5]; g + 0.5 v = [0.875, -1.75]
    expect(q).toEqual(Float32Array.of(0.1875, 2.625));
  });

  it('Adam follows PyTorch (bias-corrected moments, L2 decay in the gradient) to float32 precision', () => {
    const spec = { kind: 'adam', beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.01 } as const;
    const p = Float32Array.of(1, -2, 0.5);
    const ref = Float64Array.from(p);
    const m = [0, 0, 0];
    const v = [0, 0, 0];
    const opt = new Optimizer(spec, 3);
    const grads = [Float32Array.of(0.5, -4, 0), Float32Array.of(0.25, 1, -0.125), Float32Array.of(-1, 2, 0.5)];
    grads.forEach((g, k) => {
      opt.step(p, g, 0.1);
      const t = k + 1;
      for (let i = 0; i < 3; i++) {
        const gi = g[i] + spec.weightDecay * ref[i];
        m[i] = spec.beta1 * m[i] + (1 - spec.beta1) * gi;
        v[i] = spec.beta2 * v[i] + (1 - spec.beta2) * gi * gi;
        const mh = m[i] / (1 - spec.beta1 ** t);
        const vh = v[i] / (1 - spec.beta2 ** t);
        ref[i] -= (0.1 * mh) / (Math.sqrt(vh) + spec.eps);
      }
    });
    for (let i = 0; i < 3; i++) expect(p[i]).toBeCloseTo(ref[i], 6);
    // The first step moves each weight by about lr against its gradient's sign.
    const first = Float32Array.of(1, -2, 0.5);
    new Optimizer({ kind: 'adam' }, 3).step(first, Float32Array.of(0.5, -4, 1e-3), 0.1);
    for (const [i, want] of [0.9, -1.9, 0.4].entries()) expect(first[i]).toBeCloseTo(want, 5);
    expect(opt.state().step).toBe(3);
    expect(opt.state().buffers).toHaveLength(2);
  });

  for (const spec of [
    { kind: 'sgd', momentum: 0.9, nesterov: true, weightDecay: 1e-4 },
    { kind: 'adam', weightDecay: 1e-4 },
  ] as OptimizerSpec[]) {
    it(`${spec.kind}: the same inputs give bit-identical parameters, and a loaded state resumes exactly`, () => {
      const n = 1000;
      const grad = (k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k) * 0.1);
      const a = new Optimizer(spec, n);
      const b = new Optimizer(spec, n);
      const pa = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
      const pb = pa.slice();
      for (let k = 0; k < 3; k++) {
        a.step(pa, grad(k), 0.01);
        b.step(pb, grad(k), 0.01);
      }
      expect(pb).toEqual(pa);
      // Checkpoint a, run on; restore into a fresh optimizer and run the same steps.
      const saved = a.state();
      const snapshot = { step: saved.step, buffers: saved.buffers.map((x) => x.slice()) };
      const params = pa.slice();
      for (let k = 3; k < 5; k++) a.step(pa, grad(k), 0.01);
      const c = new Optimizer(spec, n);
      c.load(snapshot);
      for (let k = 3; k < 5; k++) c.step(params, grad(k), 0.01);
      expect(params).toEqual(pa);
      expect(c.state()).toEqual(a.state());
    });
  }

  it('refuses bad specs and arguments with ERR_BAD_REQUEST naming them', () => {
    expect(fail(() => new Optimizer({ kind: 'rmsprop' } as never, 3))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: "Expected optimizer.kind to be 'sgd' or 'adam' but received string \"rmsprop\"",
    });
    expect(fail(() => new Optimizer({ kind: 'sgd', momentum: 1 }, 3))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected optimizer.momentum to be a number in [0, 1) but received number 1',
    });
    expect(fail(() => new Optimizer({ kind: 'sgd', nesterov: true }, 3))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected optimizer.momentum to be a number in (0, 1) with nesterov but received number 0',
    });
    expect(fail(() => new Optimizer({ kind: 'adam', eps: 0 }, 3))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected optimizer.eps to be a number > 0 but received number 0',
    });
    expect(fail(() => new Optimizer({ kind: 'sgd' }, 0))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected size to be a positive integer but received number 0',
    });
    const o = new Optimizer({ kind: 'sgd', momentum: 0.5 }, 3);
    expect(fail(() => o.step(new Float32Array(3), new Float32Array(2), 0.1))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected grads to be a Float32Array of 3 floats but received Float32Array of 8 bytes',
    });
    expect(fail(() => o.step(new Float32Array(3), new Float32Array(3), Number.POSITIVE_INFINITY))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected lr to be a finite number >= 0 but received number Infinity',
    });
    expect(fail(() => o.load({ step: 1, buffers: [] }))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected state.buffers to be 1 Float32Arrays but received array of length 0',
    });
    expect(fail(() => o.load({ step: 1, buffers: [new Float32Array(4)] }))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected state.buffers[0] to be a Float32Array of 3 floats but received Float32Array of 16 bytes',
    });
  });
});

describe('learningRate (linear scaling with gradual warmup, Goyal et al. 2017)', () => {
  it('scales the base rate by batch / baseBatch after a linear warmup from the base', () => {
    const s = { base: 0.1, baseBatch: 64, batch: 256, warmupSteps: 4 };
    expect([0, 1, 2, 3, 4, 5, 100].map((k) => learningRate(s, k))).toEqual([
      0.1,
      0.1 + (0.1 * 3 * 1) / 4,
      0.1 + (0.1 * 3 * 2) / 4,
      0.1 + (0.1 * 3 * 3) / 4,
      (0.1 * 256) / 64,
      (0.1 * 256) / 64,
      (0.1 * 256) / 64,
    ]);
  });

  it('decays per epoch, warmup included; one rank at its own batch keeps the base', () => {
    const s = { base: 0.2, baseBatch: 64, batch: 64, decay: 0.5, stepsPerEpoch: 10 };
    expect([0, 9, 10, 19, 20, 35].map((k) => learningRate(s, k))).toEqual([0.2, 0.2, 0.1, 0.1, 0.05, 0.025]);
    const w = { base: 0.1, baseBatch: 10, batch: 30, warmupSteps: 20, decay: 0.5, stepsPerEpoch: 10 };
    expect(learningRate(w, 10)).toBe((0.1 + (0.2 * 10) / 20) * 0.5);
    expect(learningRate(w, 20)).toBe((0.1 * 30) / 10 / 4);
  });

  it('words a warning when the ranks change the effective batch, and none when they do not', () => {
    expect(effectiveBatchWarning({ batch: 64, ranks: 3, baseBatch: 64 })).toBe(
      '3 ranks of 64 rows make an effective batch of 192, not the 64 the learning rate was set for: the linear scaling rule multiplies it by 3',
    );
    expect(effectiveBatchWarning({ batch: 128, ranks: 1, baseBatch: 192 })).toBe(
      '1 rank of 128 rows makes an effective batch of 128, not the 192 the learning rate was set for: the linear scaling rule multiplies it by 0.6667',
    );
    expect(effectiveBatchWarning({ batch: 64, ranks: 2, baseBatch: 128 })).toBeNull();
    expect(fail(() => effectiveBatchWarning({ batch: 64, ranks: 0, baseBatch: 64 }))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected ranks to be a positive integer but received number 0',
    });
  });

  it('refuses a schedule it cannot follow', () => {
    expect(fail(() => learningRate({ base: 0.1, baseBatch: 64, batch: 64, decay: 0.9 }, 0))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected schedule.stepsPerEpoch to be a positive integer (decay is set) but received undefined',
    });
    expect(fail(() => learningRate({ base: 0, baseBatch: 64, batch: 64 }, 0))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected schedule.base to be a number > 0 but received number 0',
    });
    expect(fail(() => learningRate({ base: 0.1, baseBatch: 64, batch: 64 }, -1))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected step to be an integer >= 0 but received number -1',
    });
  });
});
