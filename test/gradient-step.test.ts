/**
 * The gradient graph and GradientStep: gradients against central finite
 * differences of a float64 loss computed in plain JS, exact layouts and
 * graph signatures, the scale rule that makes ranks add up to one batch,
 * gradients written in place, and every failure with its code.
 */

import { type Tensor, tensor, xorshift32 } from 'trellis';
import {
  GradientStep,
  gradientModel,
  initFlatParams,
  initParams,
  ModelSession,
  type ModelSpec,
  paramLayout,
} from 'trellis/models';
import { describe, expect, it } from 'vitest';

/** Deterministic uniform numbers in [-1, 1). */
function uniform(n: number, seed: number): Float64Array<ArrayBuffer> {
  const next = xorshift32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = next() / 2 ** 31 - 1;
  return out;
}

/**
 * The reference: the sum over rows of the softmax cross-entropy of a ReLU MLP
 * (or softmax regression), in float64, straight from the definition.
 */
function referenceLoss(
  spec: { features: number; classes: number; hidden: number[] },
  p: Float64Array,
  x: Float64Array,
  y: number[],
): number {
  const widths = [spec.features, ...spec.hidden, spec.classes];
  let total = 0;
  for (let r = 0; r < y.length; r++) {
    let a = Array.from(x.subarray(r * spec.features, (r + 1) * spec.features));
    let off = 0;
    for (let l = 0; l + 1 < widths.length; l++) {
      const [nin, nout] = [widths[l], widths[l + 1]];
      const z = new Array<number>(nout).fill(0);
      for (let j = 0; j < nout; j++) {
        let s = p[off + nin * nout + j];
        for (let i = 0; i < nin; i++) s += a[i] * p[off + i * nout + j];
        z[j] = s;
      }
      off += nin * nout + nout;
      a = l + 2 < widths.length ? z.map((v) => Math.max(0, v)) : z;
    }
    const m = Math.max(...a);
    const lse = m + Math.log(a.reduce((s, v) => s + Math.exp(v - m), 0));
    total += lse - a[y[r]];
  }
  return total;
}

/** Central finite differences of scale × referenceLoss at p, in float64. */
function numericGradient(
  spec: { features: number; classes: number; hidden: number[] },
  p: Float64Array,
  x: Float64Array,
  y: number[],
  scale: number,
): Float64Array {
  const eps = 1e-6;
  const g = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    const keep = p[i];
    p[i] = keep + eps;
    const up = referenceLoss(spec, p, x, y);
    p[i] = keep - eps;
    const down = referenceLoss(spec, p, x, y);
    p[i] = keep;
    g[i] = (scale * (up - down)) / (2 * eps);
  }
  return g;
}

const SMALL = { features: 5, classes: 3, hidden: [4, 3] };
const LABELS = [0, 2, 1, 2, 0, 1, 1];
const ROWS = LABELS.length;

/** Random parameters (not the init: every ReLU path must carry signal), rounded to float32. */
function randomParams(size: number, seed: number): Float32Array {
  return Float32Array.from(uniform(size, seed), (v) => v * 0.9);
}

describe('the gradient graph', () => {
  for (const [name, spec] of [
    ['softmax regression', { kind: 'softmax', features: 5, classes: 3 }],
    ['an MLP with one hidden layer', { kind: 'mlp', features: 5, classes: 3, hidden: 4 }],
    ['an MLP with two hidden layers', { kind: 'mlp', ...SMALL }],
    ['an MLP with three hidden layers', { kind: 'mlp', features: 5, classes: 3, hidden: [4, 3, 4] }],
  ] as [string, ModelSpec][]) {
    it(`${name}: GradientStep's float32 gradients match finite differences of a float64 JS loss`, async () => {
      const dims = {
        features: 5,
        classes: 3,
        hidden: spec.kind === 'softmax' ? [] : ([] as number[]).concat(spec.hidden ?? []),
      };
      await using step = await GradientStep.create(spec);
      const params = randomParams(step.layout.size, 11);
      const x = Float32Array.from(uniform(ROWS * 5, 7));
      const y = BigInt64Array.from(LABELS, BigInt);
      const grads = new Float32Array(step.layout.size);
      const scale = 1 / 3;
      const loss = await step.run(params, x, y, ROWS, scale, grads);

      const p64 = Float64Array.from(params);
      const x64 = Float64Array.from(x);
      expect(loss).toBeCloseTo(referenceLoss(dims, p64, x64, LABELS), 5);
      const numeric = numericGradient(dims, p64, x64, LABELS, scale);
      const worst = Math.max(
        ...Array.from(grads, (g, i) => Math.abs(g - numeric[i]) / Math.max(1, Math.abs(numeric[i]))),
      );
      expect(worst).toBeLessThan(2e-5);
      // The check has teeth: the gradients are far from zero.
      expect(Math.max(...Array.from(numeric, Math.abs))).toBeGreaterThan(0.05);
    });
  }

  it('in float64 (the graph through ModelSession) the gradients agree with finite differences to 1e-7', async () => {
    const spec: ModelSpec = { kind: 'mlp', ...SMALL, dtype: 'float64' };
    const g = gradientModel(spec);
    await using s = await ModelSession.fromBytes(g.bytes);
    const layout = paramLayout(spec);
    const p64 = uniform(layout.size, 11).map((v) => v * 0.9);
    const x64 = uniform(ROWS * 5, 7);
    const inputs: Record<string, ReturnType<typeof tensor>> = {
      X: tensor('float64', [ROWS, 5], x64),
      labels: tensor('int64', [ROWS], BigInt64Array.from(LABELS, BigInt)),
      scale: tensor('float64', [], Float64Array.of(0.5)),
    };
    layout.names.forEach((n, i) => {
      const len = layout.shapes[i].reduce((a, b) => a * b, 1);
      inputs[n] = tensor('float64', layout.shapes[i], p64.slice(layout.offsets[i], layout.offsets[i] + len));
    });
    const out = await s.run(inputs);
    const numeric = numericGradient(SMALL, p64, x64, LABELS, 0.5);
    const graph = new Float64Array(layout.size);
    layout.names.forEach((n, i) => {
      graph.set(out[g.grads[n]].data as Float64Array, layout.offsets[i]);
    });
    const worst = Math.max(
      ...Array.from(graph, (v, i) => Math.abs(v - numeric[i]) / Math.max(1, Math.abs(numeric[i]))),
    );
    expect(worst).toBeLessThan(1e-7);
    expect(out.loss.data[0]).toBeCloseTo(referenceLoss(SMALL, p64, x64, LABELS), 10);
  });

  it('takes uint8 pixels (scaled by 1/255 in the graph) and uint8 or int32 labels as stored', async () => {
    const base: ModelSpec = { kind: 'mlp', features: 6, classes: 3, hidden: [4, 4] };
    const pixels = Uint8Array.from({ length: 18 }, (_, i) => (i * 37) % 256);
    await using f = await GradientStep.create(base);
    await using u = await GradientStep.create({ ...base, input: 'uint8', labels: 'uint8' });
    await using i32 = await GradientStep.create({ ...base, input: 'uint8', labels: 'int32' });
    const params = randomParams(f.layout.size, 5);
    const gf = new Float32Array(f.layout.size);
    const gu = new Float32Array(f.layout.size);
    const gi = new Float32Array(f.layout.size);
    const lf = await f.run(
      params,
      Float32Array.from(pixels, (v) => v / 255),
      BigInt64Array.of(2n, 0n, 1n),
      3,
      1,
      gf,
    );
    const lu = await u.run(params, pixels, Uint8Array.of(2, 0, 1), 3, 1, gu);
    const li = await i32.run(params, pixels, Int32Array.of(2, 0, 1), 3, 1, gi);
    expect(lu).toBeCloseTo(lf, 5);
    expect(li).toBe(lu);
    expect(gi).toEqual(gu);
    expect(Math.max(...Array.from(gu, (v, k) => Math.abs(v - gf[k])))).toBeLessThan(1e-6);
  });

  it('takes float64 features with input float64, cast to float32 in the graph', async () => {
    const base: ModelSpec = { kind: 'mlp', features: 5, classes: 3, hidden: [4] };
    await using f32 = await GradientStep.create(base);
    await using f64 = await GradientStep.create({ ...base, input: 'float64' });
    const x32 = Float32Array.from(uniform(ROWS * 5, 3));
    const params = randomParams(f32.layout.size, 4);
    const a = new Float32Array(f32.layout.size);
    const b = new Float32Array(f32.layout.size);
    const y = BigInt64Array.from(LABELS, BigInt);
    expect(await f64.run(params, Float64Array.from(x32), y, ROWS, 1, b)).toBe(
      await f32.run(params, x32, y, ROWS, 1, a),
    );
    expect(b).toEqual(a);
  });
});

describe('layout and signatures', () => {
  it('lays the MLP 256-128 out flat in modelParams order', () => {
    expect(paramLayout({ kind: 'mlp', hidden: [256, 128] })).toEqual({
      names: ['W1', 'b1', 'W2', 'b2', 'W3', 'b3'],
      shapes: [[784, 256], [256], [256, 128], [128], [128, 10], [10]],
      offsets: [0, 200704, 200960, 233728, 233856, 235136],
      size: 235146,
    });
    expect(paramLayout({ kind: 'softmax' })).toEqual({
      names: ['W', 'b'],
      shapes: [[784, 10], [10]],
      offsets: [0, 7840],
      size: 7850,
    });
    // The single-hidden forms agree.
    expect(paramLayout({ kind: 'mlp', hidden: 100 })).toEqual(paramLayout({ kind: 'mlp', hidden: [100] }));
  });

  it('declares exactly the inputs and outputs of the 256-128-100 gradient graph', () => {
    const g = gradientModel({ kind: 'mlp', hidden: [256, 128, 100], input: 'uint8', labels: 'uint8' });
    const shapes = [[784, 256], [256], [256, 128], [128], [128, 100], [100], [100, 10], [10]];
    const names = ['W1', 'b1', 'W2', 'b2', 'W3', 'b3', 'W4', 'b4'];
    expect(g.inputs).toEqual([
      { name: 'X', dtype: 'uint8', shape: ['B', 784] },
      { name: 'labels', dtype: 'uint8', shape: ['B'] },
      { name: 'scale', dtype: 'float32', shape: [] },
      ...names.map((name, i) => ({ name, dtype: 'float32', shape: shapes[i] })),
    ]);
    expect(g.outputs).toEqual([
      { name: 'loss', dtype: 'float32', shape: [] },
      ...names.map((name, i) => ({ name: `${name}_grad`, dtype: 'float32', shape: shapes[i] })),
    ]);
    expect(g.params).toEqual(names);
    expect(g.grads).toEqual(Object.fromEntries(names.map((n) => [n, `${n}_grad`])));
  });

  it('initFlatParams holds the values of initParams, in layout order', () => {
    for (const spec of [
      { kind: 'mlp', hidden: [16, 8], features: 12 },
      { kind: 'softmax', features: 12 },
    ] as ModelSpec[]) {
      const flat = initFlatParams(spec, 7);
      const byName = initParams(spec, 7);
      const layout = paramLayout(spec);
      expect(flat.length).toBe(layout.size);
      layout.names.forEach((n, i) => {
        expect(flat.subarray(layout.offsets[i], layout.offsets[i] + byName[n].data.length)).toEqual(byName[n].data);
      });
    }
    // He scaling for the layers feeding a ReLU, Glorot for the output layer, zero biases.
    const p = initParams({ kind: 'mlp', hidden: [16, 8], features: 12 }, 7);
    const bound = (t: Tensor) => Math.max(...Array.from(t.data as Float32Array, Math.abs));
    expect(bound(p.W1)).toBeLessThanOrEqual(Math.sqrt(6 / 12));
    expect(bound(p.W1)).toBeGreaterThan(0.9 * Math.sqrt(6 / 12));
    expect(bound(p.W2)).toBeLessThanOrEqual(Math.sqrt(6 / 16));
    expect(bound(p.W3)).toBeLessThanOrEqual(Math.sqrt(6 / 18));
    expect(bound(p.W3)).toBeGreaterThan(0.9 * Math.sqrt(6 / 18));
    expect([bound(p.b1), bound(p.b2), bound(p.b3)]).toEqual([0, 0, 0]);
    expect(initFlatParams({ kind: 'mlp', hidden: [4] }, 1)).not.toEqual(
      initFlatParams({ kind: 'mlp', hidden: [4] }, 2),
    );
  });
});

describe('GradientStep', () => {
  const spec: ModelSpec = { kind: 'mlp', ...SMALL };
  const x = Float32Array.from(uniform(ROWS * 5, 7));
  const y = BigInt64Array.from(LABELS, BigInt);

  it('two ranks with scale 1/(global rows) sum to the gradient of the whole batch', async () => {
    await using step = await GradientStep.create(spec);
    const params = randomParams(step.layout.size, 2);
    const whole = new Float32Array(step.layout.size);
    const a = new Float32Array(step.layout.size);
    const b = new Float32Array(step.layout.size);
    const lw = await step.run(params, x, y, ROWS, 1 / ROWS, whole);
    const la = await step.run(params, x.subarray(0, 3 * 5), y.subarray(0, 3), 3, 1 / ROWS, a);
    const lb = await step.run(params, x.subarray(3 * 5), y.subarray(3), 4, 1 / ROWS, b);
    expect(la + lb).toBeCloseTo(lw, 5);
    const sum = a.map((v, i) => v + b[i]);
    expect(Math.max(...Array.from(sum, (v, i) => Math.abs(v - whole[i])))).toBeLessThan(1e-6);
  });

  it('runs a batch above maxRows in chunks, deterministically, with the same gradient', async () => {
    await using one = await GradientStep.create(spec);
    await using chunked = await GradientStep.create(spec, { maxRows: 3 });
    const params = randomParams(one.layout.size, 2);
    const g1 = new Float32Array(one.layout.size);
    const g2 = new Float32Array(one.layout.size);
    const g3 = new Float32Array(one.layout.size);
    const l1 = await one.run(params, x, y, ROWS, 1 / ROWS, g1);
    const l2 = await chunked.run(params, x, y, ROWS, 1 / ROWS, g2);
    expect(l2).toBeCloseTo(l1, 5);
    expect(Math.max(...Array.from(g2, (v, i) => Math.abs(v - g1[i])))).toBeLessThan(1e-6);
    expect(await chunked.run(params, x, y, ROWS, 1 / ROWS, g3)).toBe(l2);
    expect(g3).toEqual(g2);
  });

  it('writes the gradient in place into a view of a bigger buffer, touching nothing around it', async () => {
    await using step = await GradientStep.create(spec);
    const params = randomParams(step.layout.size, 2);
    const expected = new Float32Array(step.layout.size);
    await step.run(params, x, y, ROWS, 1, expected);
    const big = new Float32Array(step.layout.size + 8).fill(-7);
    const view = big.subarray(4, 4 + step.layout.size);
    await step.run(params, x, y, ROWS, 1, view);
    expect(view).toEqual(expected);
    expect(Array.from(big.subarray(0, 4))).toEqual([-7, -7, -7, -7]);
    expect(Array.from(big.subarray(4 + step.layout.size))).toEqual([-7, -7, -7, -7]);
  });

  it('is deterministic: the same inputs give bit-identical gradients and loss', async () => {
    await using a = await GradientStep.create({ kind: 'mlp', hidden: [64, 32], input: 'uint8', labels: 'uint8' });
    await using b = await GradientStep.create({ kind: 'mlp', hidden: [64, 32], input: 'uint8', labels: 'uint8' });
    const px = Uint8Array.from({ length: 50 * 784 }, (_, i) => (i * 7919) % 256);
    const py = Uint8Array.from({ length: 50 }, (_, i) => i % 10);
    const params = initFlatParams({ kind: 'mlp', hidden: [64, 32] }, 3);
    const ga = new Float32Array(a.layout.size);
    const gb = new Float32Array(a.layout.size);
    expect(await b.run(params, px, py, 50, 1 / 50, gb)).toBe(await a.run(params, px, py, 50, 1 / 50, ga));
    expect(gb).toEqual(ga);
  });

  it('refuses bad arguments with ERR_BAD_REQUEST naming them, float64 math with ERR_UNSUPPORTED, and runs after close with ERR_CLOSED', async () => {
    const step = await GradientStep.create(spec);
    const size = step.layout.size;
    const params = new Float32Array(size);
    const grads = new Float32Array(size);
    const fail = async (p: Promise<unknown>) =>
      p.then(
        () => null,
        (e) => ({ code: e.code, message: e.message }),
      );
    expect(await fail(step.run(new Float32Array(3), x, y, ROWS, 1, grads))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: `Expected params to be a Float32Array of ${size} floats but received Float32Array of 12 bytes`,
    });
    expect(await fail(step.run(params, x, y, ROWS, 1, new Float32Array(size + 1)))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: `Expected grads to be a Float32Array of ${size} floats but received Float32Array of ${4 * size + 4} bytes`,
    });
    expect(await fail(step.run(params, Uint8Array.from(x), y, ROWS, 1, grads))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected x to be float32 features of at least 7 × 5 but received Uint8Array of 35 bytes',
    });
    expect(await fail(step.run(params, x, Uint8Array.of(1, 2), ROWS, 1, grads))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected y to be int64 labels of at least 7 rows but received Uint8Array of 2 bytes',
    });
    expect(await fail(step.run(params, x, y, 0, 1, grads))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected rows to be a positive integer but received number 0',
    });
    expect(await fail(step.run(params, x, y, ROWS, Number.NaN, grads))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected scale to be a finite number but received number NaN',
    });
    expect(await fail(step.run(params, x, y, ROWS, 1, params))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: `Expected grads to be memory apart from params but received Float32Array of ${4 * size} bytes`,
    });
    expect(await fail(GradientStep.create({ ...spec, dtype: 'float64' }))).toEqual({
      code: 'ERR_UNSUPPORTED',
      message: "GradientStep computes in float32: spec.dtype must be 'float32' (float64 features: input 'float64')",
    });
    expect(await fail(GradientStep.create({ kind: 'mlp', hidden: [4, 0] }))).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected spec.hidden[1] to be a positive integer but received number 0',
    });
    await step.close();
    await step.close();
    expect(await fail(step.run(params, x, y, ROWS, 1, grads))).toEqual({
      code: 'ERR_CLOSED',
      message: 'the gradient step was closed',
    });
  });
});
