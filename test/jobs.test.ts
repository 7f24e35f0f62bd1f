/**
 * The jobs engine on one node, end to end: a real redis-server (AOF,
 * noeviction), a store, the JobService with its scheduler in this process,
 * and a real `trellis agent` child running the map handlers of
 * test/fixtures/handlers. Results are checked against sums computed here.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, type TrellisClient } from '../src/index.js';
import { startJobService } from '../src/jobs/engine.js';
import type { JobService } from '../src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../src/jobs/redis-server.js';
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
import { startStore } from './helpers/store.js';

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
      scheduler: { tickMs: 50, backoffMs: 50 },
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
    const { job: submitted, created } = await jobs.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum' });
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
    expect(agent.output()).toMatch(/ready node=node-a/);
  });
});
