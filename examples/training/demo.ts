/**
 * `trellis demo`: the main job on an embedded single-node deployment.
 *
 *  1. An in-process store with the local metadata backend; Fashion-MNIST
 *     loaded into it once, as a sharded dataset (train) and tensors (test).
 *  2. Sharing: reader processes read the training set in place, side by side
 *     with the same readers fed by copying, as pipelines without a shared
 *     store must.
 *  3. Training: softmax regression (or an MLP) trained through the sharded
 *     loader and onnxruntime's one-graph training step, loss per epoch, test
 *     accuracy, and what the data plane did.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '../../src/client/connect.js';
import type { Tensor } from '../../src/codecs/tensor.js';
import { TrellisError } from '../../src/errors.js';
import { writeDataset } from '../../src/loaders/shard-writer.js';
import type { ModelSpec } from '../../src/models/models.js';
import { evaluate, trainLocal } from '../../src/models/trainer.js';
import { StoreServer } from '../../src/store/store-server.js';
import { CLASSES, loadFashionMnist } from './fashion-mnist.js';

export interface DemoOptions {
  readers: number;
  size: number;
  dataDir: string;
  model: 'softmax' | 'mlp';
  epochs?: number;
  workers: number;
}

interface ReaderResult {
  mode: string;
  acquireMs: number;
  totalMs: number;
  batches: number;
  digest: string;
  overall: number[];
  counts: number[];
  privateGrowth: number;
}

const READER = fileURLToPath(new URL('./reader.js', import.meta.url));
const MiB = 1024 * 1024;
const SHARDS = 4;
/** Readers' batch size: 15000-row shards hold three, so every batch is a view. */
const READER_BATCH = 5000;
const fmt = (n: number, d = 1) => n.toFixed(d);
const mib = (n: number) => `${fmt(n / MiB)} MiB`;
/** Published test accuracies (Fashion-MNIST benchmark): what the demo's models should reach. */
const PUBLISHED = { softmax: ['logistic regression', 0.842], mlp: ['MLP (100 hidden)', 0.871] } as const;

function runReader(args: string[], stdinData?: Uint8Array[]): Promise<ReaderResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [READER, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`reader exited with ${code}`));
      else resolve(JSON.parse(out.trim().split('\n').pop() ?? '{}') as ReaderResult);
    });
    if (stdinData) {
      (async () => {
        for (const part of stdinData) {
          if (!child.stdin.write(part)) await new Promise((r) => child.stdin.once('drain', r));
        }
        child.stdin.end();
      })().catch(reject);
    } else {
      child.stdin.end();
    }
  });
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

export async function runDemo(o: DemoOptions): Promise<void> {
  const log = (s = '') => process.stdout.write(`${s}\n`);
  log('Trellis demo: an embedded single-node store, Fashion-MNIST shared in place, and training through it');
  const data = loadFashionMnist(o.dataDir);
  log(
    data.source === 'debian-package'
      ? `dataset: Fashion-MNIST from ${data.dir} (${data.train.count} train / ${data.test.count} test)`
      : `dataset: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); using a GENERATED stand-in of the same shape (${data.train.count} / ${data.test.count})`,
  );

  const dir = mkdtempSync(join(tmpdir(), 'trellis-demo-'));
  const socket = join(dir, 'store.sock');
  const store = await StoreServer.start({ socket, size: o.size, name: 'demo' });
  try {
    await using client = await connect({ socket, name: 'demo' });
    const n = data.train.count;
    const shardRows = Math.ceil(n / SHARDS);
    const load = await timed(async () => {
      await writeDataset(client, 'fmnist/train', {
        features: { dtype: 'uint8', shape: [n, 28, 28], data: data.train.images },
        labels: data.train.labels,
        shardRows,
        alignRows: 100,
      });
      await client.put(
        { dtype: 'uint8', shape: [data.test.count, 784], data: data.test.images },
        { name: 'fmnist/test/images' },
      );
      await client.put(
        { dtype: 'uint8', shape: [data.test.count], data: data.test.labels },
        { name: 'fmnist/test/labels' },
      );
    });
    const loc = await client.locate('fmnist/train');
    const st = await client.status();
    log(
      `store: loaded in ${fmt(load.ms, 0)} ms as dataset "fmnist/train" (${loc.shards.length} shards, ${mib(loc.nbytes)}) ` +
        `and test tensors; ${mib(st.memoryUsed)} used of ${mib(st.memoryLimit)}`,
    );

    // ---- sharing -----------------------------------------------------------
    const trainBytes = data.train.images.byteLength + data.train.labels.byteLength;
    log(`\n1. sharing: ${o.readers} reader processes compute per-class pixel means over the ${n} training images`);
    const shared = await timed(() =>
      Promise.all(Array.from({ length: o.readers }, () => runReader(['shm', socket, String(READER_BATCH)]))),
    );
    const copied = await timed(() =>
      Promise.all(
        Array.from({ length: o.readers }, () =>
          runReader(
            ['copy', String(data.train.images.byteLength), String(data.train.labels.byteLength)],
            [data.train.images, data.train.labels],
          ),
        ),
      ),
    );
    const row = (label: string, ms: number, rs: ReaderResult[], moved: number) => {
      const acquire = rs.reduce((a, r) => a + r.acquireMs, 0) / rs.length;
      const priv = rs.reduce((a, r) => a + r.privateGrowth, 0) / rs.length;
      log(
        `   ${label.padEnd(26)} wall ${fmt(ms, 0).padStart(5)} ms   to reach the data ${fmt(acquire, 1).padStart(6)} ms   ` +
          `private memory +${mib(priv).padStart(9)}   bytes copied ${mib(moved)}`,
      );
    };
    row('in place (trellis loader)', shared.ms, shared.value, 0);
    row('copied to each reader', copied.ms, copied.value, trainBytes * o.readers);
    const digests = new Set([...shared.value, ...copied.value].map((r) => r.digest));
    if (digests.size !== 1) throw new TrellisError('ERR_INTERNAL', `readers disagree: ${[...digests].join(', ')}`);
    const r0 = shared.value[0];
    log(`   all ${o.readers * 2} readers agree (digest ${r0.digest}); mean intensity per class:`);
    log(`   ${CLASSES.map((c, i) => `${c} ${fmt(r0.overall[i], 0)}`).join(', ')}`);

    // ---- training ------------------------------------------------------------
    const spec: ModelSpec =
      o.model === 'mlp'
        ? { kind: 'mlp', hidden: 128, input: 'uint8', labels: 'uint8' }
        : { kind: 'softmax', input: 'uint8', labels: 'uint8' };
    const epochs = o.epochs ?? (o.model === 'mlp' ? 8 : 15);
    log(
      `\n2. training ${o.model === 'mlp' ? 'an MLP (128 hidden)' : 'softmax regression'} for ${epochs} epochs: ` +
        `shuffled batches gathered by ${o.workers} loader worker process(es) into shared memory, ` +
        'one onnxruntime graph per step (forward, loss, backward, SGD)',
    );
    const train = await timed(() =>
      trainLocal(client, 'fmnist/train', {
        model: spec,
        epochs,
        decay: o.model === 'mlp' ? 0.8 : 0.85,
        workers: o.workers,
        seed: 1,
        onEpoch: (e) =>
          log(
            `   epoch ${String(e.epoch + 1).padStart(2)}  loss ${fmt(e.loss, 4)}  ${fmt(e.ms, 0).padStart(5)} ms ` +
              `(waiting for batches ${fmt(e.waitMs, 0)} ms)  lr ${fmt(e.lr, 3)}`,
          ),
      }),
    );
    const [testX, testY] = (await client.getMany([
      await client.getName('fmnist/test/images'),
      await client.getName('fmnist/test/labels'),
    ])) as Tensor[];
    const acc = await evaluate(spec, train.value.params, testX, testY);
    const [pubName, pubAcc] = PUBLISHED[o.model];
    log(
      `   test accuracy ${fmt(acc * 100, 2)}% on ${testY.shape[0]} images ` +
        `(published ${pubName}: ${fmt(pubAcc * 100, 1)}%) — trained in ${fmt(train.ms / 1000, 2)} s`,
    );

    // ---- data plane -------------------------------------------------------------
    const end = await client.status();
    const readInPlace =
      trainBytes * o.readers + train.value.bytesFromViews + testX.data.byteLength + testY.data.byteLength;
    log('\ndata plane:');
    log(`   read in place from shared memory: ${mib(readInPlace)} (readers, test set, sequential batches)`);
    log(`   gathered into shared-memory batches by loader workers: ${mib(train.value.bytesGathered)}`);
    log(`   copied between processes by trellis: 0 MiB (the copying baseline above: ${mib(trainBytes * o.readers)})`);
    log('   moved between nodes: 0 MiB (one node)');
    log(
      `   store: ${end.objects} objects, ${mib(end.memoryUsed)} used, ${mib(end.memoryResident)} resident, ` +
        `${end.counters.gets} gets`,
    );
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
