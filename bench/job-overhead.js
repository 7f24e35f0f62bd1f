import { join } from 'node:path';
import {
  fmtRatio,
  fmtUs,
  met,
  nowUs,
  ROOT,
  report,
  startAgent,
  startRedis,
  startStore,
  stats,
  stopChild,
  trellis,
} from './lib.js';

const FIRST_N = 30;
const TASKS = 1000;
const CONCURRENCY = 2;

async function main() {
  const t = await trellis();
  const { startJobService } = await import(join(ROOT, 'dist/src/jobs/engine.js'));
  const { Queue, Worker } = await import('bullmq');
  const store = await startStore({ size: '1G' });
  const redis = await startRedis();
  const port = redis.redis.options.port;
  const url = `redis://127.0.0.1:${port}`;
  const client = await t.connect({ socket: store.socket, name: 'job-overhead' });
  const ds = (name, n) =>
    t.writeDataset(client, name, {
      features: { dtype: 'float32', shape: [n, 4], data: new Float32Array(n * 4) },
      labels: new Uint8Array(n),
      shardRows: 1,
    });
  await ds('bench/one', 1);
  await ds('bench/many', TASKS);
  const prefix = 'bench';
  const logger = { info() {}, warn() {}, error: console.error };
  const jobs = await startJobService({
    redis: url,
    socket: store.socket,
    prefix,
    logger,
    scheduler: { nodeQueueCap: 1e9 },
  });
  const agent = await startAgent({ socket: store.socket, redis: url, prefix, concurrency: CONCURRENCY });

  const untilDone = async (id, onEvent = () => {}) => {
    for await (const ev of jobs.events(id, undefined, AbortSignal.timeout(120_000))) onEvent(ev);
    return jobs.get(id);
  };
  // Warm-up: JIT, module loading in the agent, queue creation.
  await untilDone((await jobs.submit({ kind: 'map', dataset: 'bench/one', handler: 'empty' })).job.id);

  const first = [];
  for (let i = 0; i < FIRST_N; i++) {
    const t0 = nowUs();
    const { job } = await jobs.submit({ kind: 'map', dataset: 'bench/one', handler: 'empty' });
    let at = 0;
    await untilDone(job.id, (ev) => {
      if (!at && ev.type === 'task' && ev.data.state === 'running') at = nowUs() - t0;
    });
    first.push(at);
  }
  const t1 = nowUs();
  const many = await untilDone((await jobs.submit({ kind: 'map', dataset: 'bench/many', handler: 'empty' })).job.id);
  const perTaskUs = (nowUs() - t1) / TASKS;
  if (many.state !== 'succeeded') throw new Error(`the ${TASKS}-task job ended ${many.state}`);
  await jobs.close();
  await stopChild(agent);

  // Raw BullMQ: one queue, one worker in this process, empty jobs.
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const q = new Queue('raw', { connection, prefix: 'raw' });
  const w = new Worker('raw', async () => 1, { connection, prefix: 'raw', concurrency: CONCURRENCY });
  let onDone = () => {};
  w.on('completed', () => onDone());
  await w.waitUntilReady();
  const round = [];
  for (let i = 0; i < FIRST_N + 5; i++) {
    const t0 = nowUs();
    const finished = new Promise((resolve) => {
      onDone = resolve;
    });
    await q.add('x', { i }, { removeOnComplete: true });
    await finished;
    if (i >= 5) round.push(nowUs() - t0);
  }
  const t2 = nowUs();
  let n = 0;
  const done = new Promise((resolve) => {
    onDone = () => {
      if (++n === TASKS) resolve();
    };
  });
  for (let i = 0; i < TASKS; i += 50)
    await q.addBulk(
      Array.from({ length: 50 }, (_, k) => ({ name: 'x', data: { i: i + k }, opts: { removeOnComplete: true } })),
    );
  await done;
  const rawPerTaskUs = (nowUs() - t2) / TASKS;
  await w.close();
  await q.close();
  await client.close();
  await redis.stop();
  await store.stop();

  const f = stats(first);
  const r = stats(round);
  report(
    'job overhead (one node)',
    [
      {
        case: 'submit -> first task running (1-shard map job)',
        result: `p50 ${fmtUs(f.p50)}, p99 ${fmtUs(f.p99)}`,
        baseline: `raw BullMQ add -> completed: p50 ${fmtUs(r.p50)}, p99 ${fmtUs(r.p99)}`,
        ratio: fmtRatio(f.p50 / r.p50),
      },
      {
        case: `empty map task end to end, per task (${TASKS}-task job, agent concurrency ${CONCURRENCY})`,
        result: fmtUs(perTaskUs),
        baseline: `raw BullMQ, ${TASKS} empty jobs through one worker: ${fmtUs(rawPerTaskUs)}`,
        ratio: fmtRatio(perTaskUs / rawPerTaskUs),
        target: 'a few ms',
        met: met(perTaskUs < 5000),
      },
    ],
    [
      `${FIRST_N} sequential submits; store and agent in child processes, the scheduler in this one (tick 100 ms; a submit wakes it at once)`,
      'a Trellis task also claims an attempt, locates its shard, stores its output, commits (fenced) and writes task events; the job ends with a dataset over the outputs',
    ],
  );
}

await main();
