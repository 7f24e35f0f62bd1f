/**
 * A data-parallel training job that loses a whole node mid-job: etcd, three
 * node stores on 127.0.0.1/.2/.3 with an agent each, and a small store on
 * 127.0.0.4 for the job service (too small for any copy, so the three nodes
 * hold every copy). The training set is written with 2 replicas; rank 0's
 * node is killed (agent and store, kill -9) past its second checkpoint, which
 * the job keeps as two copies, so the group restarts on the two live nodes
 * from that checkpoint and reads every shard from a surviving copy.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TrellisClient } from '../dist/src/index.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobService, TrainJobSpec } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { writeFmnistShards } from './helpers/fmnist-shards.js';
import { type AgentChild, freshPrefix, killAgents, quiet, spawnAgent, untilDone } from './helpers/jobs.js';
import { clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

type Store = Awaited<ReturnType<typeof spawnStore>>;
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const SHARDS_PER_NODE = 2;
const ROWS = 3_000;
const TEST_ROWS = 10_000;

let etcd: EtcdHandle;
let dir: ReturnType<typeof tempDir>;
let stores: Store[] = [];
let clients: TrellisClient[] = [];
let redis: RedisServerHandle;
let jobs: JobService;
const agents: AgentChild[] = [];
const savedToken = process.env.TRELLIS_TOKEN;
/** The engine's warnings, for the story of a job that does not succeed. */
const warnings: string[] = [];
const note = (fields: object | string, msg?: string): void => {
  warnings.push(typeof fields === 'string' ? fields : `${msg ?? ''} ${JSON.stringify(fields)}`);
};
const collecting = { ...quiet, warn: note, error: note };

beforeAll(async () => {
  etcd = await startEtcd();
  dir = tempDir();
  const token = `${randomUUID()}${randomUUID()}`;
  const tokenFile = join(dir.dir, 'token');
  writeFileSync(tokenFile, token, { mode: 0o600 });
  // The task hosts reach the peer stores over RPC with it (the ranks' collective reads $TRELLIS_TOKEN).
  process.env.TRELLIS_TOKEN = token;
  const metaPrefix = `/trellis-test/${randomUUID()}`;
  stores = await Promise.all(
    HOSTS.map((host, i) =>
      spawnStore([
        ...clusterStoreArgs({
          name: i < 3 ? `node${i}` : 'api',
          size: i < 3 ? '512M' : '1M',
          etcdUrl: etcd.url,
          metaPrefix,
          host,
          tokenFile,
        }),
        '--lease-ttl',
        '2',
        '--repair-interval',
        '200',
      ]),
    ),
  );
  clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
  redis = await startRedisServer();
  const prefix = freshPrefix();
  jobs = await startJobService({ redis: redis.url, socket: stores[3].socket, logger: collecting, prefix });
  for (let i = 0; i < 3; i++) {
    agents[i] = await spawnAgent(stores[i].socket, redis.url, prefix, ['--concurrency', '3', '--lock-ms', '3000']);
  }
  // The first three stores hold the data (the fourth is the API's); 2 copies each.
  await writeFmnistShards(clients.slice(0, 3), {
    shardsPerNode: SHARDS_PER_NODE,
    rows: ROWS,
    testRows: TEST_ROWS,
    replicas: 2,
  });
}, 180_000);

afterAll(async () => {
  await killAgents();
  await jobs?.close();
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(stores.map((s) => s.stop()));
  await redis?.stop();
  await etcd?.stop();
  dir?.cleanup();
  if (savedToken === undefined) delete process.env.TRELLIS_TOKEN;
  else process.env.TRELLIS_TOKEN = savedToken;
});

const spec = (id: string): TrainJobSpec => ({
  id,
  kind: 'train',
  dataset: 'fm/train',
  evalDataset: 'fm/test',
  model: { kind: 'softmax' },
  epochs: 4,
  learningRate: 0.1,
  baseBatch: 100,
  ranks: 3,
  batchSize: 100,
  checkpointEvery: 20,
});

/** Waits until the job is past its second checkpoint (step 40) and answers rank 0's node index. */
async function pastSecondCheckpoint(id: string): Promise<number> {
  await eventually(async () => ((await jobs.get(id)).progress?.step ?? 0) >= 45, 'step 45', 200_000);
  const node0 = (await jobs.get(id)).placement?.find((p) => p.rank === 0)?.node ?? '';
  return Number(node0.slice('node'.length));
}

/** What the job went through, should it not succeed (the log says which step it reached and why). */
async function story(id: string): Promise<string> {
  const j = await jobs.get(id);
  const log = (await jobs.logs(id)).split('\n').slice(-25).join('\n');
  return `${j.reason ?? ''} step ${j.progress?.step} restarts ${j.restarts}\n${log}\nengine: ${[...new Set(warnings)].slice(-10).join('\n')}`;
}

describe('data-parallel training over a replicated dataset', () => {
  it('loses rank 0’s whole node (store and agent, kill -9 at once) mid-job and completes from its replicated checkpoint', async () => {
    const { job } = await jobs.submit(spec('dp-node-loss'));
    const done = untilDone(jobs, job.id, 420_000);
    const victim = await pastSecondCheckpoint(job.id);
    // The checkpoint is kept as two copies, one of them off rank 0's node.
    const ck = (await clients[3].locate(`${job.id}/checkpoint`)).shards[0];
    const holders = ck.replicas.filter((r) => r.alive).map((r) => r.instanceId);
    expect([holders.length, holders.includes(clients[victim].instanceId)]).toEqual([2, true]);
    await clients[victim].close();
    await agents[victim].kill();
    stores[victim].child.kill('SIGKILL');
    const { job: end } = await done;
    expect(end.state, await story(job.id)).toBe('succeeded');
    expect(end.restarts).toBe(1);
    expect(new Set(end.placement?.map((p) => p.node))).not.toContain(`node${victim}`);
    // Every rank resumed from the same checkpoint, taken at a multiple of 20 steps, the second or later.
    const resumed = end.result?.ranks?.map((r) => r.resumedFrom) ?? [];
    expect(resumed.length).toBe(3);
    expect(new Set(resumed).size).toBe(1);
    expect(resumed[0] % 20).toBe(0);
    expect(resumed[0]).toBeGreaterThanOrEqual(40);
    expect(new Set(end.result?.ranks?.map((r) => r.paramsSha256)).size).toBe(1);
    // Trained, not just finished: far above chance (0.10), near what train-ranks.test.ts's unbroken runs reach.
    expect(end.result?.metrics?.accuracy ?? 0).toBeGreaterThan(0.75);
  }, 600_000);
});
