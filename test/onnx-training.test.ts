/**
 * Training-step graphs built in code: their hand-written backward pass
 * against finite differences, and real training on Fashion-MNIST through
 * the store (pixels and labels as stored uint8 tensors, normalized to [0, 1]
 * inside the graph).
 */

import { connect, type Tensor, type TrellisClient, tensor, xorshift32, xorshift32Unit } from 'trellis';
import { inferenceModel, initParams, ModelSession, type ModelSpec, trainingStepModel } from 'trellis/models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { datasetInstalled, loadFashionMnist } from '../dist/examples/training/fashion-mnist.js';
import { startStore } from './helpers/store.js';

/** Deterministic uniform numbers in [-1, 1). */
function uniform(n: number, seed: number) {
  const next = xorshift32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = next() / 2 ** 31 - 1;
  return out;
}

const f64 = (v: number) => tensor('float64', [], Float64Array.of(v));

describe('training-step graphs', () => {
  for (const kind of ['softmax', 'mlp'] as const) {
    it(`${kind}: the graph's gradients match central finite differences (float64)`, async () => {
      const spec: ModelSpec = { kind, features: 4, classes: 3, hidden: 5, dtype: 'float64' };
      const step = trainingStepModel(spec);
      await using s = await ModelSession.fromBytes(step.bytes);
      const X = tensor('float64', [5, 4], uniform(20, 7));
      const labels = tensor('int64', [5], BigInt64Array.of(0n, 2n, 1n, 2n, 0n));
      // Random, not the zero start, so every path of the backward pass carries signal.
      const params = initParams(spec, 3);
      Object.values(params).forEach((t, i) => {
        (t.data as Float64Array).set(uniform(t.data.length, 100 + i).map((v) => v * 0.8));
      });
      const loss = async (p: Record<string, Tensor>) =>
        (await s.run({ X, labels, lr: f64(0), ...p })).loss.data[0] as number;

      // With lr = 1 the update is p - grad, so grad = p - p_new.
      const out = await s.run({ X, labels, lr: f64(1), ...params });
      let checked = 0;
      let largest = 0;
      const eps = 1e-6;
      for (const name of step.params) {
        const p = params[name].data as Float64Array;
        const next = out[step.updates[name]].data as Float64Array;
        for (let i = 0; i < p.length; i++) {
          const grad = p[i] - next[i];
          const keep = p[i];
          p[i] = keep + eps;
          const up = await loss(params);
          p[i] = keep - eps;
          const down = await loss(params);
          p[i] = keep;
          const numeric = (up - down) / (2 * eps);
          expect(Math.abs(grad - numeric), `${name}[${i}]: graph ${grad}, numeric ${numeric}`).toBeLessThan(
            1e-7 * Math.max(1, Math.abs(numeric)),
          );
          largest = Math.max(largest, Math.abs(grad));
          checked++;
        }
      }
      expect(checked).toBe(kind === 'softmax' ? 4 * 3 + 3 : 4 * 5 + 5 + 5 * 3 + 3);
      expect(largest).toBeGreaterThan(1e-3);
      // The loss output is the mean cross-entropy of the weights before the update.
      expect(out.loss.data[0]).toBeCloseTo(await loss(params), 12);
    });
  }

  it('takes uint8 pixels and uint8 labels as they are stored, scaling pixels by 1/255 in the graph', async () => {
    const base: ModelSpec = { kind: 'mlp', features: 6, classes: 3, hidden: 4 };
    const pixels = Uint8Array.from({ length: 12 }, (_, i) => (i * 37) % 256);
    const X8 = tensor('uint8', [2, 6], pixels);
    const Xf = tensor(
      'float32',
      [2, 6],
      Float32Array.from(pixels, (v) => v / 255),
    );
    const lr = tensor('float32', [], Float32Array.of(0.5));
    const params = initParams(base, 9);
    await using a = await ModelSession.fromBytes(trainingStepModel(base).bytes);
    await using b = await ModelSession.fromBytes(trainingStepModel({ ...base, input: 'uint8', labels: 'uint8' }).bytes);
    const ra = await a.run({ X: Xf, labels: tensor('int64', [2], BigInt64Array.of(2n, 0n)), lr, ...params });
    const rb = await b.run({ X: X8, labels: tensor('uint8', [2], Uint8Array.of(2, 0)), lr, ...params });
    for (const k of Object.keys(ra)) {
      const x = ra[k].data as Float32Array;
      const y = rb[k].data as Float32Array;
      for (let i = 0; i < x.length; i++) expect(y[i]).toBeCloseTo(x[i], 5);
    }
  });
});

describe.runIf(datasetInstalled())('training on Fashion-MNIST through the store', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let ids: { trainX: string; trainY: string; testX: string; testY: string };

  beforeAll(async () => {
    env = await startStore();
    client = await connect({ socket: env.socket });
    const ds = loadFashionMnist();
    ids = {
      trainX: await client.put({ dtype: 'uint8', shape: [ds.train.count, 784], data: ds.train.images }),
      trainY: await client.put({ dtype: 'uint8', shape: [ds.train.count], data: ds.train.labels }),
      testX: await client.put({ dtype: 'uint8', shape: [ds.test.count, 784], data: ds.test.images }),
      testY: await client.put({ dtype: 'uint8', shape: [ds.test.count], data: ds.test.labels }),
    };
  });
  afterAll(async () => {
    await client?.close();
    await env?.stop();
  });

  /**
   * Plain minibatch SGD with a learning rate decayed per epoch; batches are
   * gathered from the stored tensors in a seeded shuffled order, and the
   * weights ping-pong between two sets of buffers the step writes into.
   */
  async function train(spec: ModelSpec, o: { batch: number; lr: number; decay: number; epochs: number; seed: number }) {
    const [X, Y] = (await client.getMany([ids.trainX, ids.trainY])) as Tensor<Uint8Array>[];
    const n = Y.shape[0];
    const step = trainingStepModel(spec);
    // One thread: the same arithmetic, hence the same accuracy, on any number of cores.
    await using s = await ModelSession.fromBytes(step.bytes, { intraOpNumThreads: 1 });
    let cur = initParams(spec, o.seed);
    let spare = initParams(spec, o.seed);
    const xb = tensor('uint8', [o.batch, 784]) as Tensor<Uint8Array>;
    const yb = tensor('uint8', [o.batch]) as Tensor<Uint8Array>;
    const order = Uint32Array.from({ length: n }, (_, i) => i);
    const rand = xorshift32Unit(o.seed);
    const losses: number[] = [];
    let rate = o.lr;
    for (let e = 0; e < o.epochs; e++) {
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      const lr = tensor('float32', [], Float32Array.of(rate));
      let sum = 0;
      let steps = 0;
      for (let k = 0; k + o.batch <= n; k += o.batch) {
        for (let b = 0; b < o.batch; b++) {
          const src = order[k + b];
          xb.data.set(X.data.subarray(src * 784, src * 784 + 784), b * 784);
          yb.data[b] = Y.data[src];
        }
        const into = Object.fromEntries(step.params.map((p) => [step.updates[p], spare[p]]));
        const out = await s.run({ X: xb, labels: yb, lr, ...cur }, into);
        sum += out.loss.data[0] as number;
        steps++;
        [cur, spare] = [spare, cur];
      }
      losses.push(sum / steps);
      rate *= o.decay;
    }
    await client.release(ids.trainX);
    await client.release(ids.trainY);
    return { params: cur, losses };
  }

  async function accuracy(spec: ModelSpec, params: Record<string, Tensor>): Promise<number> {
    const [X, Y] = (await client.getMany([ids.testX, ids.testY])) as Tensor<Uint8Array>[];
    await using s = await ModelSession.fromBytes(inferenceModel(spec, { weights: params }).bytes, {
      intraOpNumThreads: 1,
    });
    const { pred } = await s.run({ X });
    let right = 0;
    for (let i = 0; i < Y.data.length; i++) if (Number(pred.data[i]) === Y.data[i]) right++;
    await client.release(ids.testX);
    await client.release(ids.testY);
    return right / Y.data.length;
  }

  it('softmax regression reaches >= 0.84 test accuracy', async () => {
    const spec: ModelSpec = { kind: 'softmax', input: 'uint8', labels: 'uint8' };
    const { params, losses } = await train(spec, { batch: 100, lr: 0.3, decay: 0.85, epochs: 15, seed: 1 });
    expect(losses.at(-1)).toBeLessThan(losses[0]);
    const acc = await accuracy(spec, params);
    console.log(
      `softmax regression: loss per epoch ${losses.map((l) => l.toFixed(3)).join(' ')}; test accuracy ${acc}`,
    );
    expect(acc).toBeGreaterThanOrEqual(0.84);
  });

  it('the MLP (128 hidden) reaches >= 0.87 test accuracy', async () => {
    const spec: ModelSpec = { kind: 'mlp', hidden: 128, input: 'uint8', labels: 'uint8' };
    const { params, losses } = await train(spec, { batch: 64, lr: 0.2, decay: 0.8, epochs: 8, seed: 1 });
    expect(losses.at(-1)).toBeLessThan(losses[0]);
    const acc = await accuracy(spec, params);
    console.log(`MLP: loss per epoch ${losses.map((l) => l.toFixed(3)).join(' ')}; test accuracy ${acc}`);
    expect(acc).toBeGreaterThanOrEqual(0.87);
  });
});
