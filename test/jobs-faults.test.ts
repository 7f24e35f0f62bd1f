/**
 * Faults, with real processes: an agent killed with SIGKILL mid-task, a
 * stalled (SIGSTOPped) agent whose task another agent took over (its late
 * commit is fenced off), redis-server killed and restarted mid-job (AOF on), and the
 * API/scheduler process killed mid-job and started again. Each job still
 * completes with the result computed here, and no task commits twice.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect, type TrellisClient } from '../dist/src/index.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobEvent, JobService } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { eventually, killChildren, startChild } from './helpers/child.js';
import { freshPrefix, killAgents, outputValues, quiet, spawnAgent, sumDataset, untilDone } from './helpers/jobs.js';
import { ROOT, startStore, tempDir } from './helpers/store.js';

const ENGINE = join(ROOT, 'dist/src/jobs/engine.js');

/** Per task index, how many times the job's events said it succeeded. */
function commitsPerTask(events: JobEvent[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const e of events) {
    const d = e.data as { index: number; state: string };
    if (e.type === 'task' && d.state === 'succeeded') out[d.index] = (out[d.index] ?? 0) + 1;
  }
  return out;
}

describe('jobs under faults', () => {
  let redis: RedisServerHandle;
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let jobs: JobService | undefined;
  let prefix: string;
  let dir: ReturnType<typeof tempDir>;

  beforeEach(async () => {
    redis = await startRedisServer({ appendfsync: 'always' });
    store = await startStore({ name: 'node-a' });
    client = await connect({ socket: store.socket });
    prefix = freshPrefix();
    dir = tempDir();
  });
  afterEach(async () => {
    await killAgents();
    await killChildren();
    await jobs?.close();
    jobs = undefined;
    await client.close();
    await store.stop();
    await redis.stop();
    dir.cleanup();
  });

  const service = (scheduler = {}) =>
    startJobService({
      redis: redis.url,
      socket: store.socket,
      logger: quiet,
      prefix,
      scheduler: { tickMs: 50, ...scheduler },
    });
  const started = (file: string) => {
    try {
      return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };

  it('a task whose agent is killed with SIGKILL runs again on restart; the job completes once', async () => {
    jobs = await service();
    const { sums } = await sumDataset(client, `${prefix}/ds`, 3);
    const first = await spawnAgent(store.socket, redis.url, prefix, ['--lock-ms', '1000', '--concurrency', '3']);
    const file = join(dir.dir, 'started');
    const { job: sub } = await jobs.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'hold',
      args: { file, ms: 1500 },
    });
    await eventually(() => started(file).length === 3, 'all three tasks started');
    await first.kill();
    await spawnAgent(store.socket, redis.url, prefix, ['--lock-ms', '1000']);
    const { job, events } = await untilDone(jobs, sub.id);
    expect(job.state).toBe('succeeded');
    expect(job.tasks.map((t) => [t.state, t.attempts])).toEqual([
      ['succeeded', 2],
      ['succeeded', 2],
      ['succeeded', 2],
    ]);
    expect(commitsPerTask(events)).toEqual({ 0: 1, 1: 1, 2: 1 });
    expect(await outputValues(client, `${sub.id}/output`)).toEqual(sums);
  });

  it('a stalled agent that wakes after another took its task over commits nothing', async () => {
    jobs = await service();
    const { sums } = await sumDataset(client, `${prefix}/ds`, 1);
    const args = ['--lock-ms', '1000', '--concurrency', '1'];
    const frozen = await spawnAgent(store.socket, redis.url, prefix, args);
    const file = join(dir.dir, 'started');
    const before = (await client.list()).length;
    const { job: sub } = await jobs.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'hold',
      args: { file, ms: 1500 },
    });
    await eventually(() => started(file).length === 1, 'the task started');
    // Freeze the agent mid-task (a stall: alive, but renewing nothing); a second agent of the
    // node takes the task over once the lock expires.
    process.kill(frozen.child.pid!, 'SIGSTOP');
    await spawnAgent(store.socket, redis.url, prefix, args);
    const { job, events } = await untilDone(jobs, sub.id);
    process.kill(frozen.child.pid!, 'SIGCONT');
    expect(job.state).toBe('succeeded');
    expect(job.tasks.map((t) => [t.state, t.attempts])).toEqual([['succeeded', 2]]);
    expect(commitsPerTask(events)).toEqual({ 0: 1 });
    expect(await outputValues(client, `${sub.id}/output`)).toEqual(sums);
    // The frozen attempt wakes, finds its lease taken, and deletes its duplicate output:
    // one output object and the output dataset remain.
    await eventually(
      async () => /node-a task 0: attempt 1 discarded: another attempt holds the task/.test(await jobs!.logs(sub.id)),
      'the stalled attempt waking',
    );
    expect((await client.list()).length).toBe(before + 2);
  });

  it('completes a job across a redis-server kill and restart (AOF)', async () => {
    jobs = await service();
    const { sums } = await sumDataset(client, `${prefix}/ds`, 4);
    const agent = await spawnAgent(store.socket, redis.url, prefix, ['--concurrency', '1', '--lock-ms', '2000']);
    const file = join(dir.dir, 'started');
    const { job: sub } = await jobs.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'hold',
      args: { file, ms: 400 },
    });
    await eventually(() => started(file).length >= 1, 'the first task started');
    await redis.restart({ downMs: 300 });
    await eventually(
      async () => ['succeeded', 'failed'].includes((await jobs!.get(sub.id)).state),
      'the job ending',
      40_000,
    );
    const job = await jobs.get(sub.id);
    expect(job.state).toBe('succeeded');
    expect(job.tasks.map((t) => t.state)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    expect(await outputValues(client, `${sub.id}/output`)).toEqual(sums);
    expect(agent.output()).toMatch(/Redis is back; starting a new worker/);
  });

  it('a job survives the API process being killed with SIGKILL and started again', async () => {
    const { sums } = await sumDataset(client, `${prefix}/ds`, 4);
    await spawnAgent(store.socket, redis.url, prefix, ['--concurrency', '1']);
    const file = join(dir.dir, 'started');
    // nodeQueueCap 1: tasks are placed one at a time, so most wait for the scheduler when it dies.
    const api = startChild(`
      const { startJobService } = await import(${JSON.stringify(ENGINE)});
      const jobs = await startJobService({
        redis: ${JSON.stringify(redis.url)}, socket: ${JSON.stringify(store.socket)}, prefix: ${JSON.stringify(prefix)},
        logger: { info() {}, warn() {}, error() {} }, scheduler: { tickMs: 50, nodeQueueCap: 1 },
      });
      const { job } = await jobs.submit({ id: 'survivor', kind: 'map', dataset: ${JSON.stringify(`${prefix}/ds`)},
        handler: 'hold', args: { file: ${JSON.stringify(file)}, ms: 300 } });
      send({ id: job.id });
      await command();
    `);
    expect(await api.next()).toEqual({ id: 'survivor' });
    await eventually(() => started(file).length >= 1, 'the first task started');
    process.kill(api.pid, 'SIGKILL');
    await api.exited;
    jobs = await service({ nodeQueueCap: 1 });
    const { job, events } = await untilDone(jobs, 'survivor');
    expect(job.state).toBe('succeeded');
    expect(commitsPerTask(events)).toEqual({ 0: 1, 1: 1, 2: 1, 3: 1 });
    expect(await outputValues(client, 'survivor/output')).toEqual(sums);
  });
});
