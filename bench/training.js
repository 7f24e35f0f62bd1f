/**
 * Training time per epoch through the data plane (store → sharded loader with
 * worker processes gathering shuffled batches into shared memory → onnxruntime
 * training step) against the same training on plain in-process arrays (the
 * same shuffled gather done in this process, the same graph, the same
 * session options), in the same run. Target: overhead <= 20%.
 */
import { fmtRatio, median, met, report, tempDir, trellis } from './lib.js';

const EPOCHS = 6;
const BATCH = 100;

async function main() {
  const t = await trellis();
  const {
    StoreServer,
    connect,
    writeDataset,
    trainLocal,
    trainingStepModel,
    initParams,
    ModelSession,
    tensor,
    xorshift32Unit,
  } = t;
  const { loadFashionMnist } = await import('../dist/examples/training/fashion-mnist.js');
  const data = loadFashionMnist();
  const n = data.train.count;
  const spec = { kind: 'softmax', input: 'uint8', labels: 'uint8' };

  // ---- baseline: plain arrays in this process ----
  const step = trainingStepModel(spec);
  const session = await ModelSession.fromBytes(step.bytes, { intraOpNumThreads: 1 });
  let cur = initParams(spec, 1);
  let spare = initParams(spec, 1);
  const xb = tensor('uint8', [BATCH, 784]);
  const yb = tensor('uint8', [BATCH]);
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  const rand = xorshift32Unit(1);
  const plain = [];
  for (let e = 0; e < EPOCHS; e++) {
    const t0 = performance.now();
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const lr = tensor('float32', [], Float32Array.of(0.3));
    for (let k = 0; k < n; k += BATCH) {
      const rows = Math.min(BATCH, n - k);
      const X = rows === BATCH ? xb : tensor('uint8', [rows, 784]);
      const Y = rows === BATCH ? yb : tensor('uint8', [rows]);
      for (let b = 0; b < rows; b++) {
        const src = order[k + b];
        X.data.set(data.train.images.subarray(src * 784, src * 784 + 784), b * 784);
        Y.data[b] = data.train.labels[src];
      }
      const into = Object.fromEntries(step.params.map((p) => [step.updates[p], spare[p]]));
      await session.run({ X, labels: Y, lr, ...cur }, into);
      [cur, spare] = [spare, cur];
    }
    plain.push(performance.now() - t0);
  }
  await session.close();

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
  report('training per epoch (softmax regression, Fashion-MNIST, batch 100)', rows, [
    `${EPOCHS} epochs each, median of epochs 2..${EPOCHS}; one onnxruntime thread in both`,
  ]);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
