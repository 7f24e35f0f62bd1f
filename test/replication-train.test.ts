/**
 * A data-parallel training job that loses a whole node mid-job: etcd, three
 * node stores on 127.0.0.1/.2/.3 with an agent each, and a small store on
 * 127.0.0.4 for the job service (too small for any copy, so the three nodes
 * hold every copy). The training set is written with 2 replicas; rank 0's
 * node is killed (agent and store, kill -9) past its second checkpoint, which
 * the job keeps as two copies, so the group restarts on the two live nodes
 * from that checkpoint and reads every shard from a surviving copy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrellisClient } from '../dist/src/index.js';
import type { JobService, TrainJobSpec } from '../dist/src/jobs/job-types.js';
import { eventually } from './helpers/child.js';
import { writeFmnistShards } from './helpers/fmnist-shards.js';
import { quiet, untilDone } from './helpers/jobs.js';
import { startTrainCluster, type TrainCluster } from './helpers/train-cluster.js';

const SHARDS_PER_NODE = 2;
const ROWS = 3_000;
const TEST_ROWS = 10_000;

let cluster: TrainCluster;
let clients: TrellisClient[];
let jobs: JobService;
/** The engine's warnings, for the story of a job that does not succeed. */
const warnings: string[] = [];
const note = (fields: object | string, msg?: string): void => {
  warnings.push(typeof fields === 'string' ? fields : `${msg ?? ''} ${JSON.stringify(fields)}`);
};
const collecting = { ...quiet, warn: note, error: note };

beforeAll(async () => {
  cluster = await startTrainCluster({
    hosts: ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'],
    dataNodes: 3,
    size: (i) => (i < 3 ? '512M' : '1M'),
    name: (i) => (i < 3 ? `node${i}` : 'api'),
    storeArgs: ['--lease-ttl', '2', '--repair-interval', '200'],
    apiStore: 3,
    agentArgs: ['--concurrency', '3', '--lock-ms', '3000'],
    logger: collecting,
  });
  ({ clients, jobs } = cluster);
  // The first three stores hold the data (the fourth is the API's); 2 copies each.
  await writeFmnistShards(clients.slice(0, 3), {
    shardsPerNode: SHARDS_PER_NODE,
    rows: ROWS,
    testRows: TEST_ROWS,
    replicas: 2,
  });
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
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
    await cluster.agents[victim]?.kill();
    cluster.stores[victim].child.kill('SIGKILL');
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
