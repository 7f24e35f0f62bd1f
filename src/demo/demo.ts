/**
 * `trellis demo`, first version: an embedded store, Fashion-MNIST loaded as
 * named tensors, and several reader processes that share it with no copy —
 * side by side with the same readers fed by copying, the way a pipeline
 * without a shared store has to.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '../client/connect.js';
import { StoreServer } from '../store/store-server.js';
import { CLASSES, loadFashionMnist, type Split } from './fashion-mnist.js';

export interface DemoOptions {
  readers: number;
  size: number;
  dataDir: string;
}

interface ReaderResult {
  mode: string;
  pid: number;
  acquireMs: number;
  computeMs: number;
  digest: string;
  overall: number[];
  counts: number[];
  privateGrowth: number;
  sharedGrowth: number;
}

const READER = fileURLToPath(new URL('./reader.js', import.meta.url));
const MiB = 1024 * 1024;
const fmt = (n: number, d = 1) => n.toFixed(d);
const mib = (n: number) => `${fmt(n / MiB)} MiB`;

function runReader(args: string[], stdinData?: Uint8Array[]): Promise<ReaderResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [READER, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
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
  log('Trellis demo: one node, an embedded store, readers sharing Fashion-MNIST');
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
    await using client = await connect({ socket, name: 'demo loader' });
    const put = async (split: Split, prefix: string) => {
      const img = await client.createTensor('uint8', [split.count, 28, 28]);
      img.data.set(split.images);
      await img.seal({ name: `${prefix}/images` });
      const lab = await client.createTensor('uint8', [split.count]);
      lab.data.set(split.labels);
      await lab.seal({ name: `${prefix}/labels` });
    };
    const load = await timed(async () => {
      await put(data.train, 'fmnist/train');
      await put(data.test, 'fmnist/test');
    });
    const trainBytes = data.train.images.byteLength + data.train.labels.byteLength;
    const st = await client.status();
    log(`store: ${mib(st.memoryUsed)} used of ${mib(st.memoryLimit)}, loaded in ${fmt(load.ms)} ms as named tensors`);

    log(`\n${o.readers} reader processes, each computing per-class pixel means over ${data.train.count} images:`);
    const shared = await timed(() => Promise.all(Array.from({ length: o.readers }, () => runReader(['shm', socket]))));
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
        `  ${label.padEnd(22)} wall ${fmt(ms, 0).padStart(6)} ms   data in reader ${fmt(acquire, 2).padStart(8)} ms   ` +
          `private memory +${mib(priv).padStart(10)}   bytes copied ${mib(moved)}`,
      );
    };
    row('shared memory (trellis)', shared.ms, shared.value, 0);
    row('copy to each reader', copied.ms, copied.value, trainBytes * o.readers);

    const digests = new Set([...shared.value, ...copied.value].map((r) => r.digest));
    if (digests.size !== 1) throw new Error(`readers disagree: ${[...digests].join(', ')}`);
    const r0 = shared.value[0];
    log(`\nall ${o.readers * 2} readers agree (digest ${r0.digest}); mean pixel intensity per class:`);
    CLASSES.forEach((c, i) => {
      log(`  ${c.padEnd(12)} ${fmt(r0.overall[i]).padStart(6)}   (${r0.counts[i]} images)`);
    });

    const acqShm = shared.value.reduce((a, r) => a + r.acquireMs, 0) / o.readers;
    const acqCopy = copied.value.reduce((a, r) => a + r.acquireMs, 0) / o.readers;
    const end = await client.status();
    log('\ndata plane:');
    log(
      `  bytes read in place from shared memory: ${mib(trainBytes * o.readers)} (${o.readers} readers x ${mib(trainBytes)})`,
    );
    log(`  bytes copied by trellis: 0; by the copying baseline: ${mib(trainBytes * o.readers)}`);
    log(
      `  getting the data: ${fmt(acqShm, 2)} ms per reader with trellis vs ${fmt(acqCopy, 2)} ms by copy (${fmt(acqCopy / acqShm, 0)}x)`,
    );
    log(
      `  store: ${end.objects} objects, ${end.names} names, ${mib(end.memoryResident)} resident, connections now ${end.connections}`,
    );
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
