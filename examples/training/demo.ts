/**
 * `trellis demo`: the main job on an embedded single-node deployment, run the
 * way a cluster runs it.
 *
 *  1. A store (local metadata backend), a redis-server child on a free port
 *     with its own temporary directory (AOF on, noeviction), the jobs API on
 *     a free port and an agent for the node: the same pieces as a cluster.
 *  2. Fashion-MNIST loaded into the store once, as the sharded datasets
 *     fmnist/train and fmnist/test.
 *  3. Sharing: reader processes read the training set in place, side by side
 *     with the same readers fed by copying, as pipelines without a shared
 *     store must.
 *  4. Training: a `train` job submitted over HTTP; the scheduler places its
 *     task on the node holding the shards, the agent trains softmax
 *     regression (or an MLP) through the sharded loader and onnxruntime in a
 *     task host, and the demo prints the job's event stream, the test
 *     accuracy and what the data plane did.
 *
 * A generated stand-in replaces Fashion-MNIST only where the Debian package
 * cannot be installed; its accuracy is then printed as what it is, never
 * beside the published figure.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '../../src/client/connect.js';
import { TrellisError } from '../../src/errors.js';
import { Agent } from '../../src/jobs/agent.js';
import { ApiClient } from '../../src/jobs/api/api-client.js';
import { buildApi } from '../../src/jobs/api/build-api.js';
import { startJobService } from '../../src/jobs/engine.js';
import type { Job, TrainJobSpec } from '../../src/jobs/job-types.js';
import { startRedisServer } from '../../src/jobs/redis-server.js';
import { writeDataset } from '../../src/loaders/shard-writer.js';
import { processLogger } from '../../src/observe/process-logger.js';
import { StoreServer } from '../../src/store/store-server.js';
import { CLASSES, loadFashionMnist } from './fashion-mnist.js';

export interface DemoOptions {
  readers: number;
  size: number;
  dataDir: string;
  model: 'softmax' | 'mlp';
  epochs?: number;
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
/** A change in memory, signed: a reader's private memory can shrink while it reads in place (pages given back). */
const mibDelta = (n: number) => `${n < 0 ? '-' : '+'}${mib(Math.abs(n))}`;
/** Published test accuracies (Fashion-MNIST benchmark): what the demo's models should reach. */
const PUBLISHED = { softmax: ['logistic regression', 0.842], mlp: ['MLP 256-128-100', 0.883] } as const;
/** The MLP `--model mlp` trains (its hyperparameters: trainDefaults('mlp')). */
const MLP_HIDDEN = [256, 128];

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

/**
 * Prints a job's event stream as it comes: state changes, placement,
 * progress (the agent sends it every ~0.5 s; a train job's with its time per
 * step) and warnings.
 */
export async function follow(api: ApiClient, id: string, log: (s?: string) => void): Promise<void> {
  // The placement each task was last shown with: an agent that claims a task before the scheduler's
  // record of it lands turns the 'placed' event into a 'running' one, which carries the placement too.
  const shown = new Map<number, string>();
  for await (const ev of api.events(id)) {
    if (ev.type === 'progress') {
      const p = ev.data;
      const t = p.stepMs;
      log(
        `   epoch ${String((p.epoch ?? 0) + 1).padStart(2)}  step ${String(p.step ?? 0).padStart(5)}  ` +
          `loss ${fmt(p.loss ?? Number.NaN, 4)}  ${fmt((p.samplesPerSec ?? 0) / 1000, 1).padStart(5)}k samples/s  ` +
          `eta ${fmt((p.etaMs ?? 0) / 1000, 1)} s` +
          (t
            ? `  step: compute ${fmt(t.compute, 2)} exchange ${fmt(t.exchange, 2)} waiting ${fmt(t.waiting, 2)} ms`
            : ''),
      );
    } else if (ev.type === 'log') {
      if (/ warning: /.test(ev.data.line)) log(`   ${ev.data.line.replace(/^\S+ /, '')}`);
    } else if (ev.type === 'task') {
      const placed = `${ev.data.node}: ${ev.data.placement?.reason ?? ''}`;
      if ((ev.data.state === 'placed' || ev.data.state === 'running') && shown.get(ev.data.index) !== placed) {
        shown.set(ev.data.index, placed);
        log(`   task ${ev.data.index} placed on ${placed}`);
      }
    } else if (ev.type === 'state') {
      log(`   job ${ev.data.state}${ev.data.reason ? ` (${ev.data.reason})` : ''}`);
    }
  }
}

export async function runDemo(o: DemoOptions): Promise<void> {
  const log = (s = '') => process.stdout.write(`${s}\n`);
  log('Trellis demo: one node (a store, redis-server, the jobs API, an agent) and a training job submitted over HTTP');
  const data = loadFashionMnist(o.dataDir);
  const real = data.source === 'debian-package';
  log(
    real
      ? `dataset: Fashion-MNIST from ${data.dir} (${data.train.count} train / ${data.test.count} test)`
      : `dataset: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); using a GENERATED stand-in of the same shape (${data.train.count} / ${data.test.count}); its accuracy says nothing about Fashion-MNIST`,
  );

  const dir = mkdtempSync(join(tmpdir(), 'trellis-demo-'));
  const socket = join(dir, 'store.sock');
  // The demo's stdout is its report; warnings and errors of its parts go to stderr.
  const quiet = await processLogger({ name: 'trellis-demo', level: 'warn', destination: 2 });
  const stops: (() => Promise<unknown>)[] = [];
  try {
    const store = await StoreServer.start({ socket, size: o.size, name: 'demo' });
    stops.push(() => store.close());
    const redis = await startRedisServer();
    stops.push(() => redis.stop());
    const service = await startJobService({ redis: redis.url, socket, logger: quiet });
    stops.push(() => service.close());
    const app = buildApi({ service });
    await app.listen({ port: 0, host: '127.0.0.1' });
    stops.push(() => app.close());
    const { port } = app.server.address() as { port: number };
    const agent = await Agent.start({ socket, redis: redis.url, node: 'demo', logger: quiet });
    stops.push(() => agent.close());
    const url = `http://127.0.0.1:${port}`;
    log(
      `deployment: store "demo" (${mib(o.size)}), redis-server pid ${redis.pid()} on ${redis.host}:${redis.port} ` +
        `(AOF, noeviction), jobs API ${url}, agent for node "demo"`,
    );

    await using client = await connect({ socket, name: 'demo' });
    const n = data.train.count;
    const load = await timed(async () => {
      await writeDataset(client, 'fmnist/train', {
        features: { dtype: 'uint8', shape: [n, 28, 28], data: data.train.images },
        labels: data.train.labels,
        shardRows: Math.ceil(n / SHARDS),
        alignRows: 100,
      });
      await writeDataset(client, 'fmnist/test', {
        features: { dtype: 'uint8', shape: [data.test.count, 28, 28], data: data.test.images },
        labels: data.test.labels,
        shards: 1,
      });
    });
    const loc = await client.locate('fmnist/train');
    const st = await client.status();
    log(
      `store: loaded in ${fmt(load.ms, 0)} ms as dataset "fmnist/train" (${loc.shards.length} shards, ${mib(loc.nbytes)}) ` +
        `and "fmnist/test"; ${mib(st.memoryUsed)} used of ${mib(st.memoryLimit)}`,
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
          `private memory ${mibDelta(priv).padStart(10)}   bytes copied ${mib(moved)}`,
      );
    };
    row('in place (trellis loader)', shared.ms, shared.value, 0);
    row('copied to each reader', copied.ms, copied.value, trainBytes * o.readers);
    const digests = new Set([...shared.value, ...copied.value].map((r) => r.digest));
    if (digests.size !== 1) throw new TrellisError('ERR_INTERNAL', `readers disagree: ${[...digests].join(', ')}`);
    const r0 = shared.value[0];
    log(`   all ${o.readers * 2} readers agree (digest ${r0.digest}); mean intensity per class:`);
    log(`   ${CLASSES.map((c, i) => `${c} ${fmt(r0.overall[i], 0)}`).join(', ')}`);

    // ---- training, as a job ----------------------------------------------------
    const spec: TrainJobSpec = {
      kind: 'train',
      dataset: 'fmnist/train',
      evalDataset: 'fmnist/test',
      model: o.model === 'mlp' ? { kind: 'mlp', hidden: MLP_HIDDEN } : { kind: 'softmax' },
      ...(o.epochs === undefined ? {} : { epochs: o.epochs }),
    };
    const api = new ApiClient({ url });
    log(
      `\n2. training ${o.model === 'mlp' ? `an MLP (${MLP_HIDDEN.join('-')})` : 'softmax regression'}: POST ${url}/v1/jobs ` +
        `${JSON.stringify(spec)}`,
    );
    const started = performance.now();
    const { id } = await api.submit(spec);
    log(`   job ${id} accepted; its event stream (GET /v1/jobs/${id}/events):`);
    await follow(api, id, log);
    const job: Job = await api.get(id);
    const ms = performance.now() - started;
    if (job.state !== 'succeeded') {
      throw new TrellisError(
        (job.error?.code as never) ?? 'ERR_INTERNAL',
        `the training job ${job.state}: ${job.error?.message ?? job.reason ?? ''}`,
      );
    }
    const acc = job.result?.metrics?.accuracy ?? Number.NaN;
    if (real) {
      const [pubName, pubAcc] = PUBLISHED[o.model];
      log(
        `   test accuracy ${fmt(acc * 100, 2)}% on ${data.test.count} images ` +
          `(published ${pubName}: ${fmt(pubAcc * 100, 1)}%) — job done in ${fmt(ms / 1000, 2)} s; ` +
          `model stored as "${job.result?.model}"`,
      );
    } else {
      log(
        `   accuracy on the generated stand-in ${fmt(acc * 100, 2)}% — not comparable with published ` +
          `Fashion-MNIST results (install dataset-fashion-mnist for those); model stored as "${job.result?.model}"`,
      );
    }

    // ---- data plane -------------------------------------------------------------
    const end = await client.status();
    const local = job.tasks.reduce((a, t) => a + t.bytesLocal, 0);
    const moved = job.tasks.reduce((a, t) => a + t.bytesMoved, 0);
    log('\ndata plane:');
    log(`   read in place from shared memory by the readers: ${mib(trainBytes * o.readers)}`);
    log(`   the training task's input, read on its own node: ${mib(local)}; moved between nodes: ${mib(moved)}`);
    const growth = (rs: ReaderResult[]) => rs.reduce((a, r) => a + r.privateGrowth, 0);
    log(
      `   readers' private memory, all ${o.readers} together: ${mibDelta(growth(shared.value))} reading in place, ` +
        `${mibDelta(growth(copied.value))} fed by copying (${mib(trainBytes * o.readers)} copied to them)`,
    );
    log(
      `   store: ${end.objects} objects, ${mib(end.memoryUsed)} used, ${mib(end.memoryResident)} resident, ` +
        `${end.counters.gets} gets`,
    );
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}
