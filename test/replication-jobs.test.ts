/**
 * Jobs over a replicated dataset: three nodes (a store on 127.0.0.1/2/3 and
 * a real `trellis agent` next to each), a real etcd and redis-server. A
 * whole node is killed (store and agent, kill -9); work runs where a live
 * copy is, and repair copies at the rate it was given while a job runs.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TrellisClient, writeShard } from '../dist/src/index.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobService } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { pattern } from './helpers/bytes.js';
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
const MiB = 1024 * 1024;

describe('jobs over a replicated dataset (3 nodes)', () => {
  let etcd: EtcdHandle;
  let redis: RedisServerHandle;
  let tokenDir: ReturnType<typeof tempDir>;
  let tokenFile = '';
  let stores: Store[] = [];
  let clients: TrellisClient[] = [];
  let jobs: JobService | undefined;
  let agents: AgentChild[] = [];
  let prefix = '';

  beforeAll(async () => {
    [etcd, redis] = await Promise.all([startEtcd(), startRedisServer()]);
    tokenDir = tempDir();
    tokenFile = join(tokenDir.dir, 'token');
    writeFileSync(tokenFile, `${randomUUID()}${randomUUID()}`, { mode: 0o600 });
  });
  afterAll(async () => {
    await Promise.all([etcd.stop(), redis.stop()]);
    tokenDir.cleanup();
  });
  afterEach(async () => {
    await killAgents();
    await jobs?.close();
    jobs = undefined;
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(stores.map((s) => s.stop()));
  });

  async function start(storeArgs: string[]): Promise<JobService> {
    const metaPrefix = `/trellis-test/${randomUUID()}`;
    prefix = freshPrefix();
    stores = await Promise.all(
      HOSTS.map((host, i) =>
        spawnStore([
          ...clusterStoreArgs({ name: NODES[i], size: '256M', etcdUrl: etcd.url, metaPrefix, host, tokenFile }),
          '--lease-ttl',
          '2',
          ...storeArgs,
        ]),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
    const j = await startJobService({
      redis: redis.url,
      socket: stores[0].socket,
      logger: quiet,
      prefix,
      scheduler: { tickMs: 50 },
    });
    jobs = j;
    // A short task lock: a task running on the node that dies is handed on within a second or two.
    agents = await Promise.all(stores.map((s) => spawnAgent(s.socket, redis.url, prefix, ['--lock-ms', '1000'])));
    await eventually(async () => (await j.nodes()).length === 3, 'three agents registered');
    return j;
  }

  /** Kills node 2 whole: its agent and its store (kill -9), and waits until the cluster and the jobs see it gone. */
  async function killNode2(j: JobService): Promise<void> {
    const gone = clients[2].instanceId;
    await clients[2].close();
    await agents[2].kill();
    stores[2].child.kill('SIGKILL');
    await eventually(
      async () => (await clients[0].instances()).every((i) => i.instanceId !== gone),
      'store 2 leaves the cluster',
    );
    await eventually(async () => (await j.nodes()).length === 2, "node2's agent heartbeat expires");
  }

  it('a map job over the dataset after the kill completes where the copies are, with 0 bytes moved; its output is replicated', async () => {
    const j = await start(['--repair-interval', '200']);
    const owners = [0, 1, 2, 0, 1, 2];
    const { shardIds, sums } = await spreadDataset(clients, `${prefix}/ds`, owners);
    await clients[0].persist(shardIds, { replicas: 2 });
    const sizes = await Promise.all(shardIds.map(async (id) => (await clients[0].locate(id)).nbytes));
    await killNode2(j);
    const { job: sub } = await j.submit({ kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy', replicas: 2 });
    const { job } = await untilDone(j, sub.id);
    expect(job.state).toBe('succeeded');
    // The output is replicated too: two live copies of every output shard, on the two nodes left.
    const out = await clients[0].locate(`${sub.id}/output`);
    expect(out.shards.map((s) => s.replicas.filter((r) => r.alive).length)).toEqual(owners.map(() => 2));
    // Each task ran on a node holding a live copy of its shard (which one may have changed by repair).
    const loc = await clients[0].locate(`${prefix}/ds`);
    const nodeOf = new Map([
      [clients[0].instanceId, 'node0'],
      [clients[1].instanceId, 'node1'],
    ]);
    expect(job.tasks.map((t) => [t.bytesLocal, t.bytesMoved])).toEqual(sizes.map((n) => [n, 0]));
    for (const [i, t] of job.tasks.entries()) {
      const holders = loc.shards[i].replicas.filter((r) => r.alive).map((r) => nodeOf.get(r.instanceId));
      expect(holders).toContain(t.node);
    }
    expect(await outputValues(clients[0], `${sub.id}/output`)).toEqual(sums);
  });

  it('repair under a running job stays within its rate limit, and the job completes', async () => {
    const rate = 2 * MiB;
    const j = await start(['--repair-interval', '100', '--repair-rate', '2M']);
    const ids: string[] = [];
    for (let s = 0; s < 12; s++) {
      const c = clients[s % 3];
      const x = new Float32Array(pattern(MiB, s + 1).buffer);
      const id = await writeShard(
        c,
        { dtype: 'float32', shape: [MiB / 16, 4], data: x },
        { dtype: 'uint8', shape: [MiB / 16], data: pattern(MiB / 16, s) },
      );
      await c.persist(id);
      ids.push(id);
    }
    await clients[0].createDataset(`${prefix}/ds`, ids, { replicas: 2 });
    const copiesOn2 = (await clients[0].locate(`${prefix}/ds`)).shards.filter((s) =>
      s.replicas.some((r) => r.instanceId === clients[2].instanceId),
    ).length;
    const { job: running } = await j.submit({
      kind: 'map',
      dataset: `${prefix}/ds`,
      handler: 'slow',
      args: { ms: 300 },
    });
    await killNode2(j);
    await eventually(
      async () =>
        (await clients[0].locate(`${prefix}/ds`)).shards.every((s) => s.replicas.filter((r) => r.alive).length === 2),
      'every shard is repaired',
      60_000,
    );
    const { job } = await untilDone(j, running.id, 60_000);
    expect(job.state).toBe('succeeded');
    const recent = (await Promise.all([clients[0].status(), clients[1].status()])).flatMap((s) => s.repair.recent);
    recent.sort((a, b) => a.startedAt - b.startedAt);
    expect(recent.length).toBe(copiesOn2);
    // Copies after the first one start no sooner than the bucket (one second's worth, full at the start) allows:
    // bytes started in [t1, tj] beyond the first copy <= rate * (tj - t1) + one bucketful (+10 ms of timer slack).
    const over = recent.flatMap((r, k) => {
      const bytes = recent.slice(1, k + 1).reduce((a, x) => a + x.bytes, 0);
      const allowed = rate * ((r.startedAt - recent[0].startedAt + 10) / 1000) + rate;
      return bytes > allowed ? [{ k, bytes, allowed }] : [];
    });
    expect(over).toEqual([]);
    // The limit had to bite: more was repaired than one bucketful after the first copy.
    const total = recent.reduce((a, r) => a + r.bytes, 0);
    expect(total - recent[0].bytes).toBeGreaterThan(rate);
  });
});
