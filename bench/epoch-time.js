/**
 * Epoch time of data-parallel training: 3 ranks (one per node, batch 100)
 * against 1 rank (batch 300: the same effective batch, the same steps) in
 * the same run, on a 3-node cluster of this machine (etcd, 3 stores on
 * 127.0.0.1-3 with RPC, redis-server, one agent per node). Fashion-MNIST's
 * 60,000 training rows are spread 10 shards per node.
 *
 * The figure is the training loop's time for one epoch (steps x mean step
 * time of the slowest rank: no process start-up, no evaluation), and per
 * rank where it goes: compute (gradient graph + optimizer), exchange
 * (allReduce through the stores), waiting (the loader). This machine has 2
 * vCPUs, so 3 ranks share 2 cores: each rank's compute per step stays near
 * one rank's share of the batch, but the ranks cannot all compute at once.
 */
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import {
  fmtRatio,
  ROOT,
  report,
  startAgent,
  startClusterStores,
  startEtcd,
  startRedis,
  stopChild,
  trellis,
} from './lib.js';

const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const SHARD_ROWS = 2000;
const MODELS = [
  ['softmax', { kind: 'softmax' }],
  ['MLP 256-128', { kind: 'mlp', hidden: [256, 128] }],
];

async function main() {
  const t = await trellis();
  const { startJobService } = await import(join(ROOT, 'dist/src/jobs/engine.js'));
  const { loadFashionMnist } = await import(join(ROOT, 'dist/examples/training/fashion-mnist.js'));
  const etcd = await startEtcd();
  const redis = await startRedis();
  const url = `redis://127.0.0.1:${redis.redis.options.port}`;
  const { stores, token } = await startClusterStores(etcd, HOSTS);
  // The agents' task hosts exchange gradients over RPC with it (they inherit the environment).
  process.env.TRELLIS_TOKEN = token;
  const clients = await Promise.all(stores.map((s) => t.connect({ socket: s.socket, name: 'epoch-time' })));
  const data = loadFashionMnist();
  const ids = [];
  for (let s = 0; s < data.train.count / SHARD_ROWS; s++) {
    const c = clients[s % 3];
    const a = s * SHARD_ROWS;
    const id = await t.writeShard(
      c,
      { dtype: 'uint8', shape: [SHARD_ROWS, 784], data: data.train.images.subarray(a * 784, (a + SHARD_ROWS) * 784) },
      { dtype: 'uint8', shape: [SHARD_ROWS], data: data.train.labels.subarray(a, a + SHARD_ROWS) },
    );
    await c.persist(id);
    ids.push(id);
  }
  await clients[0].createDataset('bench/fmnist', ids);

  const prefix = `bench-epoch-${randomUUID().slice(0, 8)}`;
  const logger = { info() {}, warn() {}, error: console.error };
  const jobs = await startJobService({ redis: url, socket: stores[0].socket, prefix, logger });
  const agents = await Promise.all(
    stores.map((s) => startAgent({ socket: s.socket, redis: url, prefix, concurrency: 3 })),
  );
  while ((await jobs.nodes()).length < 3) await new Promise((r) => setTimeout(r, 20));

  async function epoch(model, ranks, batchSize) {
    const { job } = await jobs.submit({
      kind: 'train',
      dataset: 'bench/fmnist',
      model,
      epochs: 1,
      ranks,
      batchSize,
      baseBatch: 300,
    });
    for await (const _ of jobs.events(job.id, undefined, AbortSignal.timeout(600_000)));
    const done = await jobs.get(job.id);
    if (done.state !== 'succeeded') throw new Error(`job ${job.id} ended ${done.state}: ${done.error?.message}`);
    const rs = done.result.ranks;
    const per = (r) => r.steps * (r.stepMs.compute + r.stepMs.exchange + r.stepMs.waiting);
    return { ms: Math.max(...rs.map(per)), ranks: rs };
  }

  const rows = [];
  const notes = [];
  for (const [name, model] of MODELS) {
    const one = await epoch(model, 1, 300);
    const three = await epoch(model, 3, 100);
    const split = (r) =>
      `rank ${r.rank}: compute ${(r.steps * r.stepMs.compute).toFixed(0)} ms, exchange ${(r.steps * r.stepMs.exchange).toFixed(0)} ms, waiting ${(r.steps * r.stepMs.waiting).toFixed(0)} ms`;
    rows.push({
      case: `${name}: one epoch of 60,000 rows, effective batch 300 (${three.ranks[0].steps} steps)`,
      result: `3 ranks: ${(three.ms / 1000).toFixed(2)} s`,
      baseline: `1 rank: ${(one.ms / 1000).toFixed(2)} s`,
      ratio: fmtRatio(three.ms / one.ms),
    });
    notes.push(`${name}, 3 ranks: ${three.ranks.map(split).join('; ')}`);
    notes.push(`${name}, 1 rank: ${one.ranks.map(split).join('; ')}`);
  }
  notes.push(
    `load average at the end ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}; 2 vCPUs: the 3 ranks and their stores share 2 cores, so the 3-rank epoch cannot be 3x faster here`,
  );
  report('data-parallel epoch time, 3 ranks vs 1 (same effective batch)', rows, notes);
  await jobs.close();
  await Promise.all(agents.map((a) => stopChild(a)));
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(stores.map((s) => s.stop()));
  await redis.stop();
  await etcd.stop();
}

await main();
