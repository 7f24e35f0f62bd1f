/**
 * Placement throughput: a 10,000-task map job, from submit until every task
 * sits on its node's BullMQ queue and its task record says where and why
 * (admission, one locate, scoring, addBulk in batches of 50, the fenced
 * placement records), beside raw BullMQ addBulk of the same count with the
 * same ids-only payloads in the same batches. No agent consumes the queue:
 * a heartbeat written here stands in for one, so only placement is timed.
 */
import { join } from 'node:path';
import { fmtRatio, median, met, nowUs, ROOT, report, startRedis, startStore, trellis } from './lib.js';

const N = 10_000;
const ROUNDS = 3;

async function main() {
  const t = await trellis();
  const { startJobService } = await import(join(ROOT, 'dist/src/jobs/engine.js'));
  const { JobStore } = await import(join(ROOT, 'dist/src/jobs/job-store.js'));
  const { Queue } = await import('bullmq');
  const store = await startStore({ size: '1G' });
  const redis = await startRedis();
  const url = `redis://127.0.0.1:${redis.redis.options.port}`;
  const client = await t.connect({ socket: store.socket, name: 'job-placement' });
  await t.writeDataset(client, 'bench/ds', {
    features: { dtype: 'float32', shape: [N, 4], data: new Float32Array(N * 4) },
    labels: new Uint8Array(N),
    shardRows: 1,
  });
  const shards = (await client.locate('bench/ds')).shards.map((s) => s.id);

  const placed = [];
  const raw = [];
  for (let round = 0; round < ROUNDS; round++) {
    const prefix = `bench${round}`;
    const js = await JobStore.open(url, prefix);
    await js.beat(
      {
        name: 'node-a',
        instanceId: client.instanceId,
        storeId: client.storeId,
        concurrency: 1,
        handlers: ['sum'],
        pid: process.pid,
        at: Date.now(),
      },
      600_000,
    );
    const logger = { info() {}, warn: console.warn, error: console.error };
    const jobs = await startJobService({
      redis: url,
      socket: store.socket,
      prefix,
      logger,
      scheduler: { nodeQueueCap: 1e9 },
    });
    const t0 = nowUs();
    const { job } = await jobs.submit({ kind: 'map', dataset: 'bench/ds', handler: 'sum' });
    // Events: queued, running, then one 'task' event per placement record.
    const events = `${prefix}:job:${job.id}:events`;
    while ((await js.redis.xlen(events)) < N + 2) await new Promise((r) => setTimeout(r, 2));
    placed.push(N / ((nowUs() - t0) / 1e6));
    await jobs.close();

    const q = new Queue('raw', {
      connection: { ...redis.redis.options, maxRetriesPerRequest: null },
      prefix: `${prefix}raw`,
    });
    const spec = { kind: 'map', dataset: 'bench/ds', handler: 'sum', id: 'raw' };
    const t1 = nowUs();
    for (let i = 0; i < N; i += 50) {
      await q.addBulk(
        shards.slice(i, i + 50).map((s, k) => ({
          name: 'map',
          data: { jobId: 'raw', index: i + k, spec, shards: [s] },
          opts: { jobId: `raw.${i + k}`, priority: 1_000_000, removeOnComplete: true },
        })),
      );
    }
    raw.push(N / ((nowUs() - t1) / 1e6));
    await q.close();
    await js.redis.flushall();
    await js.close();
  }
  await client.close();
  await redis.stop();
  await store.stop();

  const p = median(placed);
  const r = median(raw);
  const k = (x) => `${(x / 1000).toFixed(1)}k tasks/s`;
  report(
    'job placement throughput',
    [
      {
        case: `${N}-task map job: submit until every task is queued and recorded`,
        result: k(p),
        baseline: `raw BullMQ addBulk (batches of 50, sequential): ${k(r)}`,
        ratio: fmtRatio(p / r),
        target: '>= 5k tasks/s',
        met: met(p >= 5000),
      },
    ],
    [
      `median of ${ROUNDS} rounds; one node (a store in another process), one shard per task, Redis without persistence`,
      'Trellis placement includes admission, one locate of the dataset, scoring, 8 addBulk batches in flight and a fenced Lua placement record (with a task event) per task',
    ],
  );
}

await main();
