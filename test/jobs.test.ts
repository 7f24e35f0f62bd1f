/**
 * The jobs engine on one node, end to end: a real redis-server (AOF,
 * noeviction), a store, the JobService with its scheduler in this process,
 * and a real `trellis agent` child running the map handlers of
 * test/fixtures/handlers. Results are checked against sums computed here.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, findLogLine, type TrellisClient } from '../dist/src/index.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobEvent, JobService } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { errCode, eventually } from './helpers/child.js';
import {
  type AgentChild,
  freshPrefix,
  killAgents,
  outputValues,
  quiet,
  spawnAgent,
  sumDataset,
  untilDone,
} from './helpers/jobs.js';
import { startStore, tempDir } from './helpers/store.js';

describe('jobs on one node', () => {
  let redis: RedisServerHandle;
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let jobs: JobService;
  let agent: AgentChild;
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
      scheduler: { tickMs: 50, backoffMs: 50, maxRunningJobs: 2 },
    });
    agent = await spawnAgent(store.socket, redis.url, prefix);
  });
  afterEach(async () => {
    await killAgents();
    await jobs.close();
    await client.close();
  });

  it('runs a map job on every shard and makes the outputs a dataset in shard order', async () => {
    const { shardIds, sums } = await sumDataset(client, `${prefix}/ds`, 4);
    const { job: submitted, created } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    expect(created).toBe(true);
    expect(submitted.state).toBe('queued');
    const { job, events } = await untilDone(jobs, submitted.id);
    expect(job.state).toBe('succeeded');
    expect(job.result).toEqual({ output: `${submitted.id}/output` });
    expect(await outputValues(client, `${submitted.id}/output`)).toEqual(sums);
    const nbytes = await Promise.all(shardIds.map(async (id) => (await client.locate(id)).nbytes));
    expect(job.tasks.map(({ placement: _p, ...t }) => t)).toEqual(
      nbytes.map((n, index) => ({
        index,
        node: 'node-a',
        state: 'succeeded',
        attempts: 1,
        bytesLocal: n,
        bytesMoved: 0,
      })),
    );
    expect(job.tasks[0].placement?.reason).toMatch(/^node-a holds 100% of its .* input; queue \d+$/);
    const states = events.filter((e) => e.type === 'state').map((e) => (e.data as { state: string }).state);
    expect(states).toEqual(['queued', 'running', 'succeeded']);
    expect(await jobs.logs(submitted.id)).toMatch(/node-a task 0: summed 8 rows/);
    expect(findLogLine(agent.output(), 'ready')).toMatchObject({ name: 'trellis-agent', node: 'node-a' });
  });

  const taskState = async (id: string, index = 0) => (await jobs.get(id)).tasks[index]?.state;

  it('answers the same job for the same client id, and lists and filters newest first', async () => {
    await sumDataset(client, `${prefix}/ds`, 2);
    const first = await jobs.submit({ id: 'same-id', kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    const again = await jobs.submit({
      id: 'same-id',
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'sum-xy',
      priority: 9,
    });
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.job.id).toBe('same-id');
    expect(again.job.spec).toEqual(first.job.spec);
    expect((await untilDone(jobs, 'same-id')).job.state).toBe('succeeded');
    const slow = await jobs.submit({ id: 'slow-one', kind: 'map', dataset: `${prefix}/ds`, handler: 'slow' });
    await eventually(async () => (await taskState('slow-one')) === 'running', 'the slow task running');
    const ids = (list: { id: string }[]) => list.map((j) => j.id);
    expect(ids(await jobs.list({}))).toEqual(['slow-one', 'same-id']);
    expect(ids(await jobs.list({ limit: 1 }))).toEqual(['slow-one']);
    expect(ids(await jobs.list({ state: 'succeeded' }))).toEqual(['same-id']);
    expect(ids(await jobs.list({ state: 'running', kind: 'map' }))).toEqual(['slow-one']);
    expect(ids(await jobs.list({ kind: 'train' }))).toEqual([]);
    expect(await errCode(jobs.list({ limit: 0 }))).toBe('ERR_BAD_REQUEST');
    await jobs.cancel(slow.job.id);
  });

  it('replays events after a given id, ending after the final state', async () => {
    await sumDataset(client, `${prefix}/ds`, 3);
    const { job } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    const { events } = await untilDone(jobs, job.id);
    expect(events.map((e) => e.type)).toContain('task');
    expect(events.at(-1)).toMatchObject({ type: 'state', data: { state: 'succeeded' } });
    const replay = async (after: string) => {
      const out: JobEvent[] = [];
      for await (const ev of jobs.events(job.id, after, AbortSignal.timeout(10_000))) out.push(ev);
      return out;
    };
    expect(await replay(events[2].id)).toEqual(events.slice(3));
    expect(await replay(events.at(-1)!.id)).toEqual([]);
    expect(await errCode(replay('not-an-id'))).toBe('ERR_BAD_REQUEST');
  });

  it('resumes a live stream: events after an id arrive as they happen', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const { job } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'slow', args: { ms: 60_000 } });
    await eventually(async () => (await taskState(job.id)) === 'running', 'the task running');
    const seen: JobEvent[] = [];
    for await (const ev of jobs.events(job.id, undefined, AbortSignal.timeout(10_000))) {
      seen.push(ev);
      if (ev.type === 'task' && (ev.data as { state: string }).state === 'running') break;
    }
    const rest: JobEvent[] = [];
    const reading = (async () => {
      for await (const ev of jobs.events(job.id, seen.at(-1)!.id, AbortSignal.timeout(10_000))) rest.push(ev);
    })();
    await jobs.cancel(job.id);
    await reading;
    expect(rest.at(-1)).toMatchObject({ type: 'state', data: { state: 'cancelled' } });
    expect(rest.filter((e) => seen.some((s) => s.id === e.id))).toEqual([]);
  });

  it('cancels a running task: its handler sees the abort and the task ends cancelled', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const { job } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'slow', args: { ms: 60_000 } });
    await eventually(async () => (await taskState(job.id)) === 'running', 'the task running');
    // Running is the agent's record; the handler itself may still be loading (slow under load).
    await eventually(async () => /node-a task 0: started\n/.test(await jobs.logs(job.id)), 'the handler started');
    const cancelled = await jobs.cancel(job.id);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.reason).toBe('cancelled on request');
    await eventually(async () => (await taskState(job.id)) === 'cancelled', 'the task cancelled');
    expect(await jobs.logs(job.id)).toMatch(/node-a task 0: started\n.*node-a task 0: aborted\n$/);
    // The stream ends at the final state, also for a client resuming after it (the task's own
    // 'cancelled' event came later).
    const { events } = await untilDone(jobs, job.id);
    expect(events.at(-1)).toMatchObject({ type: 'state', data: { state: 'cancelled' } });
    const after: JobEvent[] = [];
    for await (const ev of jobs.events(job.id, events.at(-1)!.id, AbortSignal.timeout(5000))) after.push(ev);
    expect(after).toEqual([]);
    // Cancelling a job that ended changes nothing.
    expect((await jobs.cancel(job.id)).state).toBe('cancelled');
  });

  it('cancel takes tasks that have not started off the queue: every task ends cancelled, the queue empties', async () => {
    await sumDataset(client, `${prefix}/ds`, 4);
    const { job } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'slow', args: { ms: 60_000 } });
    // The agent runs two at a time: two tasks run, two wait on the node's queue.
    await eventually(
      async () => (await jobs.get(job.id)).tasks.filter((t) => t.state === 'running').length === 2,
      'two tasks running',
    );
    expect((await jobs.nodes())[0].queue).toEqual({ waiting: 2, active: 2 });
    await jobs.cancel(job.id);
    await eventually(
      async () => (await jobs.get(job.id)).tasks.every((t) => t.state === 'cancelled'),
      'every task cancelled',
    );
    await eventually(async () => (await jobs.nodes())[0].queue.active === 0, 'the running ones stopped');
    expect((await jobs.nodes())[0].queue).toEqual({ waiting: 0, active: 0 });
  });

  it('fails a job that runs past its timeout with ERR_TIMEOUT and stops its task', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const { job: j } = await jobs.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'slow',
      args: { ms: 60_000 },
      timeoutMs: 300,
    });
    const { job } = await untilDone(jobs, j.id);
    expect(job.state).toBe('failed');
    expect(job.error).toEqual({ code: 'ERR_TIMEOUT', message: 'the job ran longer than its timeoutMs (300 ms)' });
    await eventually(async () => (await taskState(j.id)) === 'failed', 'the task failed');
    expect((await jobs.get(j.id)).tasks[0].error?.code).toBe('ERR_TIMEOUT');
  });

  it('admits at most maxRunningJobs, the rest in priority then submit order, saying what they wait for', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const slow = { kind: 'map', dataset: `${prefix}/ds`, handler: 'slow', args: { ms: 60_000 } } as const;
    const b1 = (await jobs.submit({ ...slow, id: 'blocker-1' })).job.id;
    const b2 = (await jobs.submit({ ...slow, id: 'blocker-2' })).job.id;
    await eventually(async () => (await jobs.get(b2)).state === 'running', 'both blockers running');
    const sum = { kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' } as const;
    const low = (await jobs.submit({ ...sum, id: 'low', priority: 0 })).job.id;
    const high = (await jobs.submit({ ...sum, id: 'high', priority: 5 })).job.id;
    await eventually(async () => (await jobs.get(low)).reason?.includes('ahead'), 'the reasons written');
    expect((await jobs.get(high)).reason).toBe('waiting for a running slot: 2 of 2 running');
    expect((await jobs.get(low)).reason).toBe('waiting for a running slot: 2 of 2 running, 1 queued ahead of it');
    await jobs.cancel(b1);
    const h = (await untilDone(jobs, high)).job;
    const l = (await untilDone(jobs, low)).job;
    expect([h.state, l.state]).toEqual(['succeeded', 'succeeded']);
    // One slot: low could start only once high had ended.
    expect(l.startedAt! >= h.endedAt!).toBe(true);
    await jobs.cancel(b2);
  });

  it('refuses bad input with its code and queues nothing', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const ds = `${prefix}/ds`;
    expect(await errCode(jobs.submit({ kind: 'map', dataset: `${prefix}/nope`, handler: 'sum-xy' }))).toBe(
      'ERR_NAME_NOT_FOUND',
    );
    expect(await errCode(jobs.submit({ kind: 'map', dataset: ds, handler: 'no-such-handler' }))).toBe(
      'ERR_HANDLER_NOT_FOUND',
    );
    expect(await errCode(jobs.submit({ kind: 'infer', dataset: ds, model: `${prefix}/no-model` }))).toBe(
      'ERR_NAME_NOT_FOUND',
    );
    const bad = [
      { kind: 'map', dataset: ds, handler: '../evil' },
      { kind: 'map', dataset: ds, handler: 'sum-xy', id: 'has:colon' },
      { kind: 'map', dataset: ds, handler: 'sum-xy', priority: 1.5 },
      { kind: 'map', dataset: ds, handler: 'sum-xy', maxRetries: -1 },
      { kind: 'map', dataset: ds, handler: 'sum-xy', timeoutMs: 0 },
      { kind: 'map', dataset: '', handler: 'sum-xy' },
      { kind: 'bake', dataset: ds },
      { kind: 'train', dataset: ds, model: { kind: 'softmax' }, ranks: 65 },
    ];
    for (const spec of bad) expect(await errCode(jobs.submit(spec as never))).toBe('ERR_BAD_REQUEST');
    expect(await jobs.list({})).toEqual([]);
    expect(await errCode(jobs.get('nope'))).toBe('ERR_JOB_NOT_FOUND');
    expect(await errCode(jobs.cancel('nope'))).toBe('ERR_JOB_NOT_FOUND');
    expect(await errCode(jobs.logs('nope'))).toBe('ERR_JOB_NOT_FOUND');
    expect(
      await errCode(jobs.events('nope', undefined, AbortSignal.timeout(1000))[Symbol.asyncIterator]().next()),
    ).toBe('ERR_JOB_NOT_FOUND');
  });

  it('a handler that throws fails its task with its code after its retries', async () => {
    await sumDataset(client, `${prefix}/ds`, 1);
    const ds = `${prefix}/ds`;
    const plain = (await jobs.submit({ kind: 'map', dataset: ds, handler: 'boom', maxRetries: 1 })).job.id;
    const coded = (
      await jobs.submit({
        kind: 'map',
        dataset: ds,
        handler: 'boom',
        maxRetries: 2,
        args: { code: 'ERR_OUT_OF_MEMORY' },
      })
    ).job.id;
    const permanent = (
      await jobs.submit({ kind: 'map', dataset: ds, handler: 'boom', maxRetries: 3, args: { code: 'ERR_BAD_REQUEST' } })
    ).job.id;
    const p = (await untilDone(jobs, plain)).job;
    expect(p.state).toBe('failed');
    expect(p.error).toEqual({
      code: 'ERR_HANDLER_FAILED',
      message: expect.stringMatching(/^task 0 failed: handler boom: Error: boom/),
    });
    expect(p.tasks.map((t) => [t.state, t.attempts, t.error?.code])).toEqual([['failed', 2, 'ERR_HANDLER_FAILED']]);
    const c = (await untilDone(jobs, coded)).job;
    expect([c.error?.code, c.tasks[0].attempts]).toEqual(['ERR_OUT_OF_MEMORY', 3]);
    const b = (await untilDone(jobs, permanent)).job;
    expect([b.error?.code, b.tasks[0].attempts]).toEqual(['ERR_BAD_REQUEST', 1]);
    expect(await jobs.logs(plain)).toMatch(/attempt 1 of 2 failed: ERR_HANDLER_FAILED/);
  });

  it('retries a failed attempt and succeeds with the right result', async () => {
    const { sums } = await sumDataset(client, `${prefix}/ds`, 3);
    const dir = tempDir();
    try {
      const { job: j } = await jobs.submit({
        kind: 'map',
        dataset: `${prefix}/ds`,
        handler: 'flaky',
        args: { dir: dir.dir },
        output: `${prefix}/flaky-out`,
      });
      const { job } = await untilDone(jobs, j.id);
      expect(job.state).toBe('succeeded');
      expect(job.tasks.map((t) => [t.state, t.attempts, t.error])).toEqual(sums.map(() => ['succeeded', 2, undefined]));
      expect(await outputValues(client, `${prefix}/flaky-out`)).toEqual(sums);
    } finally {
      dir.cleanup();
    }
  });

  it('reports nodes and datasets with node names; the agent drains on SIGTERM, exits 0 and leaves', async () => {
    const { shardIds } = await sumDataset(client, `${prefix}/ds`, 2);
    const st = await client.status();
    await eventually(async () => (await jobs.nodes()).length === 1, 'the agent registered');
    expect(await jobs.nodes()).toEqual([
      {
        name: 'node-a',
        instanceId: st.instanceId,
        memoryUsed: expect.any(Number),
        memoryLimit: st.memoryLimit,
        queue: { waiting: 0, active: 0 },
      },
    ]);
    const sizes = await Promise.all(shardIds.map(async (id) => (await client.locate(id)).nbytes));
    expect(await jobs.dataset(`${prefix}/ds`)).toEqual({
      name: `${prefix}/ds`,
      shards: shardIds.map((id, i) => ({ id, node: 'node-a', nbytes: sizes[i] })),
      bytesByNode: { 'node-a': sizes[0] + sizes[1] },
    });
    expect(await errCode(jobs.dataset(`${prefix}/none`))).toBe('ERR_NAME_NOT_FOUND');
    expect(await agent.stop()).toBe(0);
    expect(await jobs.nodes()).toEqual([]);
  });

  it('an agent stopped with SIGTERM hands a task it cannot finish back without spending an attempt', async () => {
    await agent.stop();
    const short = await spawnAgent(store.socket, redis.url, prefix, ['--drain-ms', '300']);
    await sumDataset(client, `${prefix}/ds`, 1);
    const { job: sub } = await jobs.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'slow',
      args: { ms: 1500 },
      maxRetries: 0,
    });
    await eventually(async () => (await taskState(sub.id)) === 'running', 'the task running');
    expect(await short.stop()).toBe(0);
    // The node has no agent now: the scheduler takes the task back and says what it waits for.
    await eventually(async () => (await taskState(sub.id)) === 'waiting', 'the task taken back');
    await eventually(
      async () => (await jobs.get(sub.id)).reason === 'waiting for an agent with handler "slow"',
      'the job saying what it waits for',
    );
    expect((await jobs.get(sub.id)).tasks[0].attempts).toBe(1);
    await spawnAgent(store.socket, redis.url, prefix);
    const { job } = await untilDone(jobs, sub.id);
    expect(job.state).toBe('succeeded');
    expect(job.tasks.map((t) => [t.state, t.attempts])).toEqual([['succeeded', 2]]);
  });

  it('the API and an agent refuse a Redis that evicts keys', async () => {
    const admin = new Redis({ port: redis.port, host: redis.host });
    try {
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      expect(
        await errCode(
          startJobService({ redis: redis.url, socket: store.socket, logger: quiet, prefix: freshPrefix() }),
        ),
      ).toBe('ERR_REDIS_EVICTS');
      await expect(spawnAgent(store.socket, redis.url, freshPrefix())).rejects.toThrow(
        /agent exited with 1: trellis: ERR_REDIS_EVICTS: trellis agent: Redis at 127\.0\.0\.1:\d+ has maxmemory-policy allkeys-lru/,
      );
    } finally {
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      admin.disconnect();
    }
  });
});
