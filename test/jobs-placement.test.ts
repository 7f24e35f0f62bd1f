/**
 * Placement on a cluster: three stores on 127.0.0.1/2/3 with RPC and a real
 * etcd, one real `trellis agent` next to each, shards spread unevenly. Free
 * nodes: every task runs where its shard is and nothing moves. A busy node:
 * its tasks wait the bounded locality wait, then run elsewhere, and the
 * agent there migrates the shard and counts the bytes.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, type TrellisClient } from '../dist/src/index.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobService } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import {
  type AgentChild,
  freshPrefix,
  killAgents,
  outputValues,
  quiet,
  spawnAgent,
  spreadDataset,
  untilDone,
} from './helpers/jobs.js';
import { clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

type Store = Awaited<ReturnType<typeof spawnStore>>;
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const NODES = ['node0', 'node1', 'node2'];

describe('placement across three nodes', () => {
  let etcd: EtcdHandle;
  let redis: RedisServerHandle;
  let tokenDir: ReturnType<typeof tempDir>;
  let stores: Store[] = [];
  let clients: TrellisClient[] = [];
  let jobs: JobService | undefined;
  let prefix: string;
  let agents: AgentChild[] = [];
  let token = '';
  let metaPrefix = '';

  beforeAll(async () => {
    [etcd, redis] = await Promise.all([startEtcd(), startRedisServer()]);
    tokenDir = tempDir();
    const tokenFile = join(tokenDir.dir, 'token');
    token = `${randomUUID()}${randomUUID()}`;
    writeFileSync(tokenFile, token, { mode: 0o600 });
    metaPrefix = `/trellis-test/${randomUUID()}`;
    stores = await Promise.all(
      HOSTS.map((host, i) =>
        spawnStore(clusterStoreArgs({ name: NODES[i], size: '256M', etcdUrl: etcd.url, metaPrefix, host, tokenFile })),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(stores.map((s) => s.stop()));
    await Promise.all([etcd.stop(), redis.stop()]);
    tokenDir.cleanup();
  });
  beforeEach(() => {
    prefix = freshPrefix();
  });
  afterEach(async () => {
    await killAgents();
    await jobs?.close();
    jobs = undefined;
  });

  async function start(
    scheduler: Parameters<typeof startJobService>[0]['scheduler'],
    agentArgs: string[][],
    where: { socket: string } | { meta: string; metaPrefix: string; token: string } = { socket: stores[0].socket },
  ) {
    jobs = await startJobService({ redis: redis.url, ...where, logger: quiet, prefix, scheduler });
    agents = await Promise.all(stores.map((s, i) => spawnAgent(s.socket, redis.url, prefix, agentArgs[i] ?? [])));
    await eventually(async () => (await jobs!.nodes()).length === 3, 'three agents registered');
    return jobs;
  }

  it('runs every task where its shard is when the nodes are free: 0 bytes moved', async () => {
    const j = await start({ tickMs: 50 }, []);
    const owners = [0, 0, 0, 0, 1, 1, 2];
    const { shardIds, sums } = await spreadDataset(clients, `${prefix}/ds`, owners);
    const sizes = await Promise.all(shardIds.map(async (id) => (await clients[0].locate(id)).nbytes));
    const info = await j.dataset(`${prefix}/ds`);
    expect(info.shards.map((s) => s.node)).toEqual(owners.map((o) => NODES[o]));
    const { job: sub } = await j.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    const { job } = await untilDone(j, sub.id);
    expect(job.state).toBe('succeeded');
    expect(job.tasks.map((t) => [t.node, t.bytesLocal, t.bytesMoved])).toEqual(
      owners.map((o, i) => [NODES[o], sizes[i], 0]),
    );
    expect(job.tasks.map((t) => t.placement?.reason.split(' of its ')[0])).toEqual(
      owners.map((o) => `${NODES[o]} holds 100%`),
    );
    expect(await outputValues(clients[0], `${sub.id}/output`)).toEqual(sums);
    // The outputs stay where they were computed: the output dataset has the input's locality.
    expect((await j.dataset(`${sub.id}/output`)).shards.map((s) => s.node)).toEqual(owners.map((o) => NODES[o]));
  });

  it("spills a busy node's tasks after the bounded wait; the shard is migrated and counted", async () => {
    const wait = 3000;
    const j = await start({ tickMs: 50, nodeQueueCap: 3, localityWaitMs: wait }, [[], ['--concurrency', '1'], []]);
    // Keep node1 busy: three slow tasks on its queue (one running, two waiting) fill its cap.
    await spreadDataset(clients, `${prefix}/busy`, [1, 1, 1]);
    const blocker = (await j.submit({ kind: 'map', dataset: `${prefix}/busy`, handler: 'slow', args: { ms: 60_000 } }))
      .job.id;
    await eventually(async () => (await j.get(blocker)).tasks.every((t) => t.node === 'node1'), 'node1 busy');
    const owners = [0, 1, 1, 2];
    const { shardIds, sums } = await spreadDataset(clients, `${prefix}/ds`, owners);
    const sizes = await Promise.all(shardIds.map(async (id) => (await clients[0].locate(id)).nbytes));
    const { job: sub } = await j.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    await eventually(
      async () =>
        (await j.get(sub.id)).reason === `2 tasks waiting for node1 (busy) up to ${(wait / 1000).toFixed(1)} s`,
      'the job saying what it waits for',
    );
    const { job } = await untilDone(j, sub.id);
    expect(job.state).toBe('succeeded');
    const moved = job.tasks.filter((t) => t.bytesMoved > 0);
    expect(moved.map((t) => t.index)).toEqual([1, 2]);
    expect(moved.map((t) => [t.bytesLocal, t.bytesMoved])).toEqual([
      [0, sizes[1]],
      [0, sizes[2]],
    ]);
    expect(moved.map((t) => t.node === 'node0' || t.node === 'node2')).toEqual([true, true]);
    for (const t of moved)
      expect(t.placement?.reason).toMatch(
        new RegExp(
          `^node1 holds 100% of its .* input but was busy \\(queue \\d+ of 3\\) for \\d+\\.\\d s; ${t.node} \\(queue \\d+\\) migrates `,
        ),
      );
    expect(job.tasks.filter((t) => t.bytesMoved === 0).map((t) => [t.index, t.node, t.bytesLocal])).toEqual([
      [0, 'node0', sizes[0]],
      [3, 'node2', sizes[3]],
    ]);
    expect(await outputValues(clients[0], `${sub.id}/output`)).toEqual(sums);
    await j.cancel(blocker);
  });

  it("places a dead agent's tasks again on a live node, which migrates their shards", async () => {
    const j = await start({ tickMs: 50 }, [[], [], ['--lock-ms', '1000']]);
    const file = join(tokenDir.dir, `started-${prefix}`);
    const owners = [0, 1, 2];
    const { shardIds, sums } = await spreadDataset(clients, `${prefix}/ds`, owners);
    const sizes = await Promise.all(shardIds.map(async (id) => (await clients[0].locate(id)).nbytes));
    const { job: sub } = await j.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'hold',
      args: { file, ms: 3000 },
      output: `${prefix}/out`,
    });
    await eventually(() => (readFileSync(file, 'utf8').match(/\n/g) ?? []).length === 3, 'all three tasks started');
    await agents[2].kill();
    // Task 2 is placed again once node2's heartbeat and the task's lock have expired.
    const { job } = await untilDone(j, sub.id);
    expect(job.state).toBe('succeeded');
    const t2 = job.tasks[2];
    expect([t2.node === 'node0' || t2.node === 'node1', t2.attempts, t2.bytesLocal, t2.bytesMoved]).toEqual([
      true,
      2,
      0,
      sizes[2],
    ]);
    expect(t2.placement?.reason).toMatch(
      /^no node with a live agent holds its 136 B input; node[01] \(queue \d+\) migrates it$/,
    );
    // The reasons are in the comparison so that a failure says why a task went elsewhere.
    expect(
      job.tasks.slice(0, 2).map((t) => [t.node, t.attempts, t.bytesMoved, t.placement?.reason.split(' of its ')[0]]),
    ).toEqual([
      ['node0', 1, 0, 'node0 holds 100%'],
      ['node1', 1, 0, 'node1 holds 100%'],
    ]);
    expect(await outputValues(clients[0], `${prefix}/out`)).toEqual(sums);
  });

  it('an API without a store of its own reaches one over RPC through etcd and runs the same job', async () => {
    const j = await start({ tickMs: 50 }, [], { meta: etcd.url, metaPrefix, token });
    const owners = [2, 1, 0, 2];
    const { sums } = await spreadDataset(clients, `${prefix}/ds`, owners);
    expect((await j.dataset(`${prefix}/ds`)).shards.map((s) => s.node)).toEqual(owners.map((o) => NODES[o]));
    const { job: sub } = await j.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' });
    const { job } = await untilDone(j, sub.id);
    expect(job.tasks.map((t) => [t.node, t.bytesMoved])).toEqual(owners.map((o) => [NODES[o], 0]));
    expect(await outputValues(clients[0], `${sub.id}/output`)).toEqual(sums);
  });
});
