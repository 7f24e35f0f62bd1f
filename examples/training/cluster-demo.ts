/**
 * `trellis demo --cluster 3` (npm run demo:cluster): data-parallel training
 * on a cluster of three nodes, all on this machine and all real processes:
 *
 *  - an etcd server (metadata, the stores' leases);
 *  - three `trellis store` processes on 127.0.0.1, .2 and .3, each with RPC
 *    (a shared token) and its own socket and arena;
 *  - a redis-server (the jobs' records and the BullMQ queues);
 *  - a `trellis api` process and one `trellis agent` process per node.
 *
 * Fashion-MNIST is written as shards spread over the three stores (each
 * node writes its own), a 3-rank train job is submitted over HTTP and its
 * event stream printed, then the same job on 1 rank at the same effective
 * batch (3 × 100 = 300 rows a step) for comparison. It prints both test
 * accuracies, the bytes each job read locally and moved, and each rank's
 * time per step split into compute, exchange and waiting.
 *
 * Every process it starts is stopped at the end, on an error and on Ctrl-C.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TrellisClient } from '../../src/client/client.js';
import { connect } from '../../src/client/connect.js';
import { TrellisError } from '../../src/errors.js';
import { ApiClient } from '../../src/jobs/api/api-client.js';
import type { Job, TrainJobSpec } from '../../src/jobs/job-types.js';
import { startRedisServer } from '../../src/jobs/redis-server.js';
import { writeShard } from '../../src/loaders/shard-writer.js';
import { startEtcdServer } from '../../src/meta/etcd-server.js';
import { findLogLine } from '../../src/observe/log-lines.js';
import { PACKAGE_ROOT } from '../../src/package-root.js';
import { follow } from './demo.js';
import { loadFashionMnist } from './fashion-mnist.js';

export interface ClusterDemoOptions {
  nodes: number;
  dataDir: string;
  /** Store memory per node, e.g. '512M'. */
  size: string;
  /** 10 by default: after 5 epochs softmax regression is still moving, and runs in different orders differ by ~1 pp. */
  epochs: number;
}

const MiB = 1024 * 1024;
const fmt = (n: number, d = 1) => n.toFixed(d);
const mib = (n: number) => `${fmt(n / MiB)} MiB`;
/** Rows per shard: a multiple of both batches (100 per rank, 300 on one rank); 30 shards, 10 per node. */
const SHARD_ROWS = 2000;

interface Proc {
  child: ChildProcess;
  out: () => string;
}

/** A `trellis` child process, resolved once it logs its JSON line whose msg is `word` (docs/OPERATIONS.md, "Logs"). */
function trellis(args: string[], word: string, env: NodeJS.ProcessEnv, procs: Proc[]): Promise<Proc> {
  const bin = join(PACKAGE_ROOT, 'bin/trellis.js');
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  const p: Proc = { child, out: () => out };
  procs.push(p);
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d;
      if (findLogLine(out, word) !== undefined) resolve(p);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (d: Buffer) => {
      out += d;
    });
    child.once('exit', (code, sig) =>
      reject(new TrellisError('ERR_WORKER_FAILED', `trellis ${args[0]} exited (${code ?? sig}): ${out.slice(-2000)}`)),
    );
  });
}

async function stopProc(p: Proc): Promise<void> {
  const c = p.child;
  if (c.exitCode !== null || c.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const kill = setTimeout(() => c.kill('SIGKILL'), 15_000);
    c.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    c.kill('SIGTERM');
  });
}

export async function runClusterDemo(o: ClusterDemoOptions): Promise<void> {
  const log = (s = '') => process.stdout.write(`${s}\n`);
  const hosts = Array.from({ length: o.nodes }, (_, i) => `127.0.0.${i + 1}`);
  log(`Trellis cluster demo: ${o.nodes} nodes on ${hosts.join(', ')}, data-parallel training over HTTP`);
  const data = loadFashionMnist(o.dataDir);
  const real = data.source === 'debian-package';
  log(
    real
      ? `dataset: Fashion-MNIST from ${data.dir} (${data.train.count} train / ${data.test.count} test)`
      : `dataset: Fashion-MNIST is not installed; a GENERATED stand-in of the same shape (its accuracy says nothing about Fashion-MNIST)`,
  );

  const dir = mkdtempSync(join(tmpdir(), 'trellis-cluster-demo-'));
  const procs: Proc[] = [];
  const clients: TrellisClient[] = [];
  const stops: (() => Promise<unknown>)[] = [];
  let stopping: Promise<void> | undefined;
  const stopAll = () => {
    stopping ??= (async () => {
      for (const c of clients) await c.close().catch(() => {});
      // Agents and the API before the stores they use, the stores before etcd and Redis.
      for (const p of [...procs].reverse()) await stopProc(p).catch(() => {});
      for (const s of stops.reverse()) await s().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\ntrellis demo: ${sig}: stopping every process it started\n`);
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const token = randomBytes(24).toString('hex');
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, token, { mode: 0o600 });
    // Task hosts reach the peer stores over RPC with it (the gradient exchange).
    const env = { ...process.env, TRELLIS_TOKEN: token };
    const etcd = await startEtcdServer();
    stops.push(() => etcd.stop());
    const redis = await startRedisServer();
    stops.push(() => redis.stop());
    const sockets = hosts.map((_, i) => join(dir, `node${i}.sock`));
    // biome-ignore format: one line per flag pair reads best
    await Promise.all(hosts.map((host, i) => trellis([
      'store', '--socket', sockets[i], '--size', o.size, '--name', `node${i}`,
      '--meta', etcd.url, '--rpc-host', host, '--rpc-port', '0', '--token-file', tokenFile,
    ], 'ready', env, procs)));
    const api = await trellis(
      ['api', '--port', '0', '--redis', redis.url, '--meta', etcd.url, '--socket', sockets[0]],
      'listening',
      env,
      procs,
    );
    const url = String(findLogLine(api.out(), 'listening')?.url ?? '');
    await Promise.all(
      sockets.map((s) =>
        trellis(['agent', '--socket', s, '--redis', redis.url, '--concurrency', '3'], 'ready', env, procs),
      ),
    );
    log(
      `deployment: etcd ${etcd.endpoint}, redis-server ${redis.host}:${redis.port}, ${o.nodes} stores ` +
        `(${o.size} each, RPC on ${hosts.join(', ')}), jobs API ${url}, ${o.nodes} agents`,
    );

    // ---- data: each node writes the shards it holds ------------------------
    for (const s of sockets) clients.push(await connect({ socket: s, name: 'cluster demo' }));
    const shards = Math.floor(data.train.count / SHARD_ROWS);
    const ids: string[] = [];
    for (let s = 0; s < shards; s++) {
      const c = clients[s % o.nodes];
      const a = s * SHARD_ROWS;
      const id = await writeShard(
        c,
        { dtype: 'uint8', shape: [SHARD_ROWS, 784], data: data.train.images.subarray(a * 784, (a + SHARD_ROWS) * 784) },
        { dtype: 'uint8', shape: [SHARD_ROWS], data: data.train.labels.subarray(a, a + SHARD_ROWS) },
      );
      await c.persist(id);
      ids.push(id);
    }
    await clients[0].createDataset('fmnist/train', ids);
    const test = await writeShard(
      clients[0],
      { dtype: 'uint8', shape: [data.test.count, 784], data: data.test.images },
      { dtype: 'uint8', shape: [data.test.count], data: data.test.labels },
    );
    await clients[0].persist(test);
    await clients[0].createDataset('fmnist/test', [test]);
    // The API takes $TRELLIS_TOKEN as its bearer token too.
    const http = new ApiClient({ url, token });
    const ds = await http.dataset('fmnist/train');
    log(
      `dataset fmnist/train: ${ids.length} shards of ${SHARD_ROWS} rows spread over the nodes: ` +
        Object.entries(ds.bytesByNode)
          .map(([n, b]) => `${n} ${mib(b)}`)
          .join(', '),
    );

    // ---- the two jobs ----------------------------------------------------------
    const base = {
      kind: 'train',
      dataset: 'fmnist/train',
      evalDataset: 'fmnist/test',
      model: { kind: 'softmax' },
      epochs: o.epochs,
      learningRate: 0.1,
      baseBatch: 100,
    } as const;
    const runJob = async (spec: TrainJobSpec, title: string): Promise<{ job: Job; ms: number }> => {
      log(`\n${title}: POST ${url}/v1/jobs ${JSON.stringify(spec)}`);
      const t = performance.now();
      const { id } = await http.submit(spec);
      await follow(http, id, log);
      const job = await http.get(id);
      if (job.state !== 'succeeded') {
        throw new TrellisError(
          (job.error?.code as never) ?? 'ERR_INTERNAL',
          `job ${id} ${job.state}: ${job.error?.message ?? job.reason ?? ''}`,
        );
      }
      return { job, ms: performance.now() - t };
    };
    const three = await runJob({ ...base, ranks: o.nodes, batchSize: 100 }, `1. ${o.nodes} ranks of batch 100`);
    const one = await runJob({ ...base, ranks: 1, batchSize: 100 * o.nodes }, `2. 1 rank of batch ${100 * o.nodes}`);

    // ---- what happened ---------------------------------------------------------
    const acc = (j: Job) => (j.result?.metrics?.accuracy ?? Number.NaN) * 100;
    log(
      `\nresults (effective batch ${100 * o.nodes} in both, softmax regression, ${o.epochs} epoch${o.epochs === 1 ? '' : 's'}):`,
    );
    for (const [label, r] of [
      [`${o.nodes} ranks`, three],
      ['1 rank ', one],
    ] as const) {
      const local = r.job.tasks.reduce((a, t) => a + t.bytesLocal, 0);
      const moved = r.job.tasks.reduce((a, t) => a + t.bytesMoved, 0);
      log(
        `   ${label}: test accuracy ${fmt(acc(r.job), 2)}%${real ? ' (published logistic regression: 84.2%)' : ''}, ` +
          `job ${fmt(r.ms / 1000, 1)} s; training bytes read locally ${mib(local)}, moved ${mib(moved)} ` +
          `(${fmt((100 * local) / Math.max(1, local + moved), 1)}% local)`,
      );
      for (const k of r.job.result?.ranks ?? []) {
        log(
          `      rank ${k.rank} on ${k.node}: ${k.rows} rows, ${k.steps} steps; per step compute ${fmt(k.stepMs.compute, 2)} ms, ` +
            `exchange ${fmt(k.stepMs.exchange, 2)} ms, waiting ${fmt(k.stepMs.waiting, 2)} ms`,
        );
      }
    }
    const shas = new Set((three.job.result?.ranks ?? []).map((k) => k.paramsSha256));
    log(
      `   the ${o.nodes} ranks end with ${shas.size === 1 ? 'bit-identical' : 'DIFFERENT'} parameters; ` +
        `accuracy difference ${fmt(Math.abs(acc(three.job) - acc(one.job)), 2)} pp`,
    );
    for (const w of three.job.warnings ?? []) log(`   warning: ${w}`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopAll();
  }
}
