/**
 * Training time per epoch through the data plane (store → sharded loader with
 * worker processes gathering shuffled batches into shared memory → gradient
 * graph + optimizer) against the same training on plain in-process arrays (the
 * same shuffled gather done in this process, the same graph, the same
 * session options), in the same run. Target: overhead <= 20%.
 *
 * Then the pieces of one MLP (256-128) step, each beside a same-run baseline:
 * the gradient graph's rows/s against onnxruntime running the forward graph
 * alone on the same batches (the ratio is what backward costs), and the
 * optimizer's update against a plain copy (TypedArray.set) of the same bytes.
 */
import os from 'node:os';
import { fmtRatio, median, met, report, tempDir, trellis } from './lib.js';

const EPOCHS = 6;
const BATCH = 100;
const MLP_BATCH = 64;
const MLP_STEPS = 200;
const OPT_REPS = 200;

async function main() {
  const t = await trellis();
  const { StoreServer, connect, writeDataset, trainLocal, GradientStep, Optimizer, initFlatParams, xorshift32Unit } = t;
  const { loadFashionMnist } = await import('../dist/examples/training/fashion-mnist.js');
  const data = loadFashionMnist();
  const n = data.train.count;
  const spec = { kind: 'softmax', input: 'uint8', labels: 'uint8' };

  // ---- baseline: plain arrays in this process ----
  const step = await GradientStep.create(spec, { threads: 1 });
  const params = initFlatParams(spec, 1);
  const grads = new Float32Array(step.layout.size);
  const sgd = new Optimizer({ kind: 'sgd' }, step.layout.size);
  const xb = new Uint8Array(BATCH * 784);
  const yb = new Uint8Array(BATCH);
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  const rand = xorshift32Unit(1);
  const plain = [];
  for (let e = 0; e < EPOCHS; e++) {
    const t0 = performance.now();
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (let k = 0; k < n; k += BATCH) {
      const rows = Math.min(BATCH, n - k);
      for (let b = 0; b < rows; b++) {
        const src = order[k + b];
        xb.set(data.train.images.subarray(src * 784, src * 784 + 784), b * 784);
        yb[b] = data.train.labels[src];
      }
      await step.run(params, xb, yb, rows, 1 / rows, grads);
      sgd.step(params, grads, 0.3);
    }
    plain.push(performance.now() - t0);
  }
  await step.close();

  // ---- through the data plane ----
  const { dir, cleanup } = tempDir();
  const store = await StoreServer.start({ socket: `${dir}/s.sock`, size: 1024 ** 3 });
  const client = await connect({ socket: `${dir}/s.sock` });
  await writeDataset(client, 'fmnist/train', {
    features: { dtype: 'uint8', shape: [n, 28, 28], data: data.train.images },
    labels: data.train.labels,
    shards: 4,
    alignRows: BATCH,
  });
  const runs = {};
  for (const workers of [1, 2]) {
    const res = await trainLocal(client, 'fmnist/train', {
      model: spec,
      epochs: EPOCHS,
      batchSize: BATCH,
      decay: 1,
      workers,
      seed: 1,
    });
    runs[workers] = res.epochs.map((e) => ({ ms: e.ms, wait: e.waitMs }));
  }
  await client.close();
  await store.close();
  cleanup();

  // the first epoch pays JIT, worker start and first page faults in both: compare the rest
  const steady = (xs) => median(xs.slice(1));
  const base = steady(plain);
  const rows = [{ case: 'plain in-process arrays (baseline)', result: `${base.toFixed(0)} ms/epoch` }];
  for (const [w, eps] of Object.entries(runs)) {
    const ms = steady(eps.map((e) => e.ms));
    const wait = steady(eps.map((e) => e.wait));
    rows.push({
      case: `trellis loader, shuffled, ${w} worker${w === '1' ? '' : 's'}`,
      result: `${ms.toFixed(0)} ms/epoch (waiting ${wait.toFixed(0)} ms)`,
      baseline: `${base.toFixed(0)} ms`,
      ratio: fmtRatio(ms / base),
      target: '<= 1.20x',
      met: met(ms / base <= 1.2),
    });
  }
  rows.push(...(await mlpPieces(t, data)));
  const [load1] = os.loadavg();
  report('training per epoch (softmax regression, Fashion-MNIST, batch 100); MLP step pieces', rows, [
    `${EPOCHS} epochs each, median of epochs 2..${EPOCHS}; one onnxruntime thread in both`,
    `MLP: ${MLP_STEPS} steps a round, 5 rounds alternating gradient and forward, median of rounds 2..5; optimizer: median over ${OPT_REPS} steps`,
    `load average at the end: ${load1.toFixed(2)} (2 vCPUs, shared machine: compare ratios)`,
  ]);
}

/** The MLP 256-128's gradient step against its forward pass alone, and the optimizer against a copy. */
async function mlpPieces(t, data) {
  const { GradientStep, Optimizer, initFlatParams, inferenceModel, paramTensors, ModelSession } = t;
  const spec = { kind: 'mlp', hidden: [256, 128], input: 'uint8', labels: 'uint8' };
  const step = await GradientStep.create(spec, { threads: 1 });
  const params = initFlatParams(spec, 1);
  const grads = new Float32Array(step.layout.size);
  // The forward graph over the same parameters (as inputs, so nothing is constant-folded away).
  const fwd = await ModelSession.fromBytes(inferenceModel(spec).bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const weights = paramTensors(step.layout, params);
  const batches = (k) => {
    const o = ((k * MLP_BATCH) % (data.train.count - MLP_BATCH)) * 784;
    return {
      x: data.train.images.subarray(o, o + MLP_BATCH * 784),
      y: data.train.labels.subarray(o / 784, o / 784 + MLP_BATCH),
    };
  };
  // Alternate the two, a round of each at a time, so load on the shared machine hits both alike.
  const gradMs = [];
  const fwdMs = [];
  for (let round = 0; round < 5; round++) {
    let t0 = performance.now();
    for (let k = 0; k < MLP_STEPS; k++) {
      const b = batches(k);
      await step.run(params, b.x, b.y, MLP_BATCH, 1 / MLP_BATCH, grads);
    }
    gradMs.push(performance.now() - t0);
    t0 = performance.now();
    for (let k = 0; k < MLP_STEPS; k++) {
      const b = batches(k);
      await fwd.run({ X: { dtype: 'uint8', shape: [MLP_BATCH, 784], data: b.x }, ...weights });
    }
    fwdMs.push(performance.now() - t0);
  }
  await step.close();
  await fwd.close();
  const rowsPerSec = (ms) => (MLP_STEPS * MLP_BATCH * 1000) / ms;
  const g = median(gradMs.slice(1));
  const f = median(fwdMs.slice(1));

  const bytes = step.layout.size * 4;
  const copyDst = new Float32Array(step.layout.size);
  const timeIt = (fn) => {
    const xs = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let k = 0; k < OPT_REPS; k++) fn();
      xs.push(((performance.now() - t0) * 1000) / OPT_REPS);
    }
    return median(xs.slice(1));
  };
  const copyUs = timeIt(() => copyDst.set(grads));
  const rows = [
    {
      case: `MLP 256-128 gradient step (forward + backward), batch ${MLP_BATCH}`,
      result: `${(rowsPerSec(g) / 1000).toFixed(1)}k rows/s`,
      baseline: `forward only: ${(rowsPerSec(f) / 1000).toFixed(1)}k rows/s`,
      ratio: fmtRatio(g / f),
    },
    {
      case: `plain copy of the ${(bytes / 1e6).toFixed(2)} MB of parameters (baseline)`,
      result: `${copyUs.toFixed(0)} µs`,
    },
  ];
  for (const o of [{ kind: 'sgd' }, { kind: 'sgd', momentum: 0.9, nesterov: true }, { kind: 'adam' }]) {
    const opt = new Optimizer(o, step.layout.size);
    const us = timeIt(() => opt.step(params, grads, 1e-9));
    rows.push({
      case: `optimizer step: ${o.kind}${o.momentum ? ' + Nesterov momentum' : ''}`,
      result: `${us.toFixed(0)} µs (${((us / ((g * 1000) / MLP_STEPS)) * 100).toFixed(1)}% of a gradient step)`,
      baseline: `copy ${copyUs.toFixed(0)} µs`,
      ratio: fmtRatio(us / copyUs),
    });
  }
  return rows;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
