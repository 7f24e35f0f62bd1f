/**
 * `trellis agent --metrics-port` as a real process beside a real store,
 * Redis and engine: its /metrics count the tasks it ran by outcome, their
 * durations and the bytes read locally, pass `promtool check metrics`, and
 * its stdout is pino JSON whose task lines carry the job id and task index.
 */
import { connect, findLogLine, type TrellisClient } from 'trellis';
import { freePort } from 'trellis/jobs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobService } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { type AgentChild, freshPrefix, killAgents, quiet, spawnAgent, sumDataset, untilDone } from './helpers/jobs.js';
import { families, promtool, sample, scrape } from './helpers/metrics.js';
import { startStore } from './helpers/store.js';

describe('agent metrics and logs', () => {
  let redis: RedisServerHandle;
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let jobs: JobService;
  let agent: AgentChild;
  let url: string;
  let prefix: string;

  beforeAll(async () => {
    redis = await startRedisServer();
    store = await startStore({ name: 'node-a' });
  });
  afterAll(async () => {
    await store.stop();
    await redis.stop();
  });
  beforeEach(async () => {
    prefix = freshPrefix();
    client = await connect({ socket: store.socket });
    jobs = await startJobService({
      redis: redis.url,
      socket: store.socket,
      logger: quiet,
      prefix,
      scheduler: { tickMs: 50, backoffMs: 50 },
    });
    const port = await freePort();
    agent = await spawnAgent(store.socket, redis.url, prefix, ['--metrics-port', String(port)]);
    url = `http://127.0.0.1:${port}`;
    expect(findLogLine(agent.output(), 'ready')).toMatchObject({ name: 'trellis-agent', node: 'node-a', metrics: url });
  });
  afterEach(async () => {
    await killAgents();
    await jobs.close();
    await client.close();
  });

  it('counts succeeded tasks, their durations and their local bytes; promtool passes; task lines carry the ids', async () => {
    const { shardIds } = await sumDataset(client, `${prefix}/ds`, 3);
    const { job: submitted } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    const { job } = await untilDone(jobs, submitted.id);
    expect(job.state).toBe('succeeded');
    let local = 0;
    for (const id of shardIds) local += (await client.locate(id)).nbytes;

    const text = await scrape(url);
    const done = { kind: 'map', state: 'succeeded' };
    expect({
      succeeded: sample(text, 'trellis_agent_tasks_total', done),
      timed: sample(text, 'trellis_agent_task_duration_seconds_count', done),
      local: sample(text, 'trellis_agent_input_bytes_total', { source: 'local' }),
      moved: sample(text, 'trellis_agent_input_bytes_total', { source: 'moved' }),
      running: sample(text, 'trellis_agent_tasks_running'),
      redisUp: sample(text, 'trellis_agent_redis_up'),
      workers: sample(text, 'trellis_agent_workers_started_total'),
    }).toEqual({ succeeded: 3, timed: 3, local, moved: 0, running: 0, redisUp: 1, workers: 1 });
    expect(await promtool(families(text))).toEqual({ code: 0, output: '' });
    // Node's process metrics are served beside ours.
    expect(sample(text, 'nodejs_heap_size_total_bytes')).toBeGreaterThan(0);

    const lines = agent
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const ended = lines
      .filter((l) => l.msg === 'task ended')
      .map(({ level, name, node, jobId, task, outcome }) => ({ level, name, node, jobId, task, outcome }))
      .sort((a, b) => (a.task as number) - (b.task as number));
    expect(ended).toEqual(
      [0, 1, 2].map((task) => ({
        level: 30,
        name: 'trellis-agent',
        node: 'node-a',
        jobId: job.id,
        task,
        outcome: 'succeeded',
      })),
    );
  });

  it('counts retried and failed attempts, and logs a handler error at warn with its code', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const { job: submitted } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'fail-code' });
    const { job } = await untilDone(jobs, submitted.id);
    expect([job.state, job.error?.code]).toEqual(['failed', 'ERR_SIZE_MISMATCH']);
    const text = await scrape(url);
    expect({
      retried: sample(text, 'trellis_agent_tasks_total', { kind: 'map', state: 'retried' }),
      failed: sample(text, 'trellis_agent_tasks_total', { kind: 'map', state: 'failed' }),
      succeeded: sample(text, 'trellis_agent_tasks_total', { kind: 'map', state: 'succeeded' }),
    }).toEqual({ retried: 2, failed: 1, succeeded: undefined });
    const failures = agent
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => String(l.msg).startsWith('task attempt failed'))
      .map(({ level, jobId, task, code, last, err }) => ({ level, jobId, task, code, last, err }));
    expect(failures).toEqual([
      { level: 40, jobId: job.id, task: 0, code: 'ERR_SIZE_MISMATCH', last: false, err: undefined },
      { level: 40, jobId: job.id, task: 0, code: 'ERR_SIZE_MISMATCH', last: false, err: undefined },
      { level: 40, jobId: job.id, task: 0, code: 'ERR_SIZE_MISMATCH', last: true, err: undefined },
    ]);
  });

  it('/healthz answers 200 while the agent consumes its queue', async () => {
    const r = await fetch(`${url}/healthz`);
    expect({ status: r.status, body: await r.json() }).toEqual({ status: 200, body: { status: 'ok' } });
  });
});
