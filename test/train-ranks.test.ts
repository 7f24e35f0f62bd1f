/**
 * Data-parallel training across three nodes, all real: etcd, three stores
 * on 127.0.0.1/.2/.3 with RPC, redis-server, the job service and one
 * `trellis agent` process per node. A Fashion-MNIST subset is written as
 * shards spread over the nodes.
 *
 * - 3 ranks of batch 100 reach the test accuracy of 1 rank of batch 300
 *   (the same effective batch) within 0.5 pp; every rank ends with the same
 *   parameter bits; ≥ 99 % of the 3-rank job's training bytes are read
 *   locally; the job warns that its ranks scale the learning rate.
 * - kill -9 of rank 0's agent mid-job: the group restarts from rank 0's
 *   checkpoint (fetched over RPC by the new rank 0), re-placed on the two
 *   live nodes, and completes within 0.5 pp of the unbroken run.
 * - A rank that fails for good (labels of a dtype training does not take)
 *   fails the job with its code at once: no restart, no task left in any
 *   node's queue, no object left in any store.
 */
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrellisClient } from '../dist/src/index.js';
import type { Job, JobService, TrainJobSpec } from '../dist/src/jobs/job-types.js';
import { bullConnection, queueName } from '../dist/src/jobs/node-queue.js';
import { writeShard } from '../dist/src/loaders/shard-writer.js';
import { eventually } from './helpers/child.js';
import { writeFmnistShards } from './helpers/fmnist-shards.js';
import { untilDone } from './helpers/jobs.js';
import { startTrainCluster, type TrainCluster } from './helpers/train-cluster.js';

const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
/** Shards per node and rows per shard: 54,000 training rows, a multiple of every batch below. */
const SHARDS_PER_NODE = 3;
const ROWS = 6_000;
const EPOCHS = 5;
/** Steps per epoch: 18,000 rows per rank in batches of 100 (or 54,000 in batches of 300). */
const STEPS = 180;
const TEST_ROWS = 10_000;

let cluster: TrainCluster;
let clients: TrellisClient[];
let jobs: JobService;

beforeAll(async () => {
  cluster = await startTrainCluster({
    hosts: HOSTS,
    dataNodes: 3,
    size: () => '512M',
    agentArgs: ['--concurrency', '3', '--lock-ms', '3000'],
  });
  ({ clients, jobs } = cluster);
  await writeFmnistShards(clients, { shardsPerNode: SHARDS_PER_NODE, rows: ROWS, testRows: TEST_ROWS });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

const train = (over: Partial<TrainJobSpec>): TrainJobSpec => ({
  kind: 'train',
  dataset: 'fm/train',
  evalDataset: 'fm/test',
  model: { kind: 'softmax' },
  epochs: EPOCHS,
  learningRate: 0.1,
  baseBatch: 100,
  ...over,
});

async function run(spec: TrainJobSpec, timeoutMs = 120_000): Promise<Job> {
  const { job } = await jobs.submit(spec);
  return (await untilDone(jobs, job.id, timeoutMs)).job;
}

const accuracy = (j: Job) => j.result?.metrics?.accuracy ?? Number.NaN;

describe('data-parallel training over three nodes', () => {
  let threeRanks: Job;

  it('3 ranks of batch 100 reach the accuracy of 1 rank of batch 300, with identical parameters and local reads', async () => {
    threeRanks = await run(train({ id: 'dp3', ranks: 3, batchSize: 100 }));
    expect(threeRanks.state).toBe('succeeded');
    const one = await run(train({ id: 'dp1', ranks: 1, batchSize: 300 }));
    expect(one.state).toBe('succeeded');

    const acc3 = accuracy(threeRanks);
    const acc1 = accuracy(one);
    expect(acc3).toBeGreaterThan(0.8);
    expect(Math.abs(acc3 - acc1)).toBeLessThanOrEqual(0.005);

    // One rank per node, each on the two shards beside it.
    expect(threeRanks.placement).toEqual(
      [0, 1, 2].map((r) => ({
        rank: r,
        node: `node${r}`,
        shards: SHARDS_PER_NODE,
        bytes: SHARDS_PER_NODE * ROWS * 785,
        bytesLocal: SHARDS_PER_NODE * ROWS * 785,
        bytesMoved: 0,
      })),
    );
    const ranks = threeRanks.result?.ranks ?? [];
    expect(ranks.map((r) => [r.rank, r.node, r.rows, r.steps, r.resumedFrom])).toEqual([
      [0, 'node0', SHARDS_PER_NODE * ROWS, EPOCHS * STEPS, 0],
      [1, 'node1', SHARDS_PER_NODE * ROWS, EPOCHS * STEPS, 0],
      [2, 'node2', SHARDS_PER_NODE * ROWS, EPOCHS * STEPS, 0],
    ]);
    expect(new Set(ranks.map((r) => r.paramsSha256)).size).toBe(1);
    expect(threeRanks.result?.effectiveBatch).toBe(300);

    const local = threeRanks.tasks.reduce((a, t) => a + t.bytesLocal, 0);
    const moved = threeRanks.tasks.reduce((a, t) => a + t.bytesMoved, 0);
    expect(local / (local + moved)).toBeGreaterThanOrEqual(0.99);

    const warning =
      'effective batch 300 (3 ranks x batch 100) differs from baseBatch 100: learning rate scaled 3.00x ' +
      'from 0.1 to 0.3 with a linear warm-up over the first epoch (at most 200 steps) (Goyal et al. 2017); ' +
      'accuracy may differ from 100-row batches';
    expect(threeRanks.warnings).toEqual([warning]);
    expect(await jobs.logs('dp3')).toContain(`warning: ${warning}`);
  }, 300_000);

  it('kill -9 of rank 0’s agent mid-job: the group restarts from the checkpoint and completes', async () => {
    const { job } = await jobs.submit(train({ id: 'dp-kill', ranks: 3, batchSize: 100, checkpointEvery: 20 }));
    const events = (async () => untilDone(jobs, job.id, 240_000))();
    // Past the second checkpoint (step 40), well before the end (900 steps).
    await eventually(async () => ((await jobs.get(job.id)).progress?.step ?? 0) >= 45, 'step 45', 120_000);
    const placed = (await jobs.get(job.id)).placement ?? [];
    const node0 = placed.find((p) => p.rank === 0)?.node;
    const victim = Number(node0?.slice('node'.length));
    await cluster.agents[victim]?.kill();
    cluster.agents[victim] = undefined;
    try {
      const { job: done } = await events;
      expect(done.state).toBe('succeeded');
      expect(done.restarts).toBe(1);
      // Re-placed on the two live nodes; the dead node's shards are moved to them.
      expect(new Set(done.placement?.map((p) => p.node))).not.toContain(node0);
      // Every rank resumed from the same checkpoint, taken at a multiple of 20 steps, the second or later.
      const resumed = done.result?.ranks?.map((r) => r.resumedFrom) ?? [];
      const from = resumed[0];
      expect(resumed).toEqual([from, from, from]);
      expect(from % 20).toBe(0);
      expect(from).toBeGreaterThanOrEqual(40);
      expect(new Set(done.result?.ranks?.map((r) => r.paramsSha256)).size).toBe(1);
      expect(Math.abs(accuracy(done) - accuracy(threeRanks))).toBeLessThanOrEqual(0.005);
      expect(await jobs.logs(job.id)).toMatch(
        /restarting the group from its last checkpoint \(restart 1 of at most 3\)/,
      );
    } finally {
      await cluster.startAgent(victim);
    }
  }, 300_000);

  it('a rank that fails for good fails the job with its code: no restart, no orphan task, no object left', async () => {
    // node1's shard has float32 labels: the rank there cannot train on it.
    const bad = await writeShard(
      clients[1],
      { dtype: 'float32', shape: [200, 4], data: new Float32Array(800) },
      { dtype: 'float32', shape: [200], data: new Float32Array(200) },
    );
    await clients[1].persist(bad);
    const good = await Promise.all(
      [0, 2].map(async (i) => {
        const id = await writeShard(
          clients[i],
          { dtype: 'float32', shape: [200, 4], data: new Float32Array(800).fill(0.5) },
          { dtype: 'uint8', shape: [200], data: new Uint8Array(200).fill(3) },
        );
        await clients[i].persist(id);
        return id;
      }),
    );
    await clients[0].createDataset('bad/train', [good[0], bad, good[1]]);
    const before = await Promise.all(clients.map(async (c) => (await c.status()).objects));
    const { evalDataset: _none, ...spec } = train({ id: 'dp-bad', dataset: 'bad/train', batchSize: 50 });
    const failed = await run(spec);
    expect(failed.state).toBe('failed');
    expect(failed.restarts).toBe(0);
    expect(failed.error).toEqual({
      code: 'ERR_UNSUPPORTED',
      message: 'rank 1 failed: labels of dtype float32: training takes uint8, int32 or int64',
    });
    const counts = async () =>
      Promise.all(
        HOSTS.map(async (_, i) => {
          const q = new Queue(queueName(`node${i}`), {
            connection: bullConnection(cluster.redis.url),
            prefix: `${cluster.prefix}:bull`,
          });
          try {
            return await q.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'failed', 'completed');
          } finally {
            await q.close();
          }
        }),
      );
    const empty = { waiting: 0, prioritized: 0, delayed: 0, active: 0, failed: 0, completed: 0 };
    // Ranks stop within the agents' 200 ms poll; a moment later nothing of the job is left anywhere.
    const objects = () => Promise.all(clients.map(async (c) => (await c.status()).objects));
    const settled = async () =>
      JSON.stringify([await counts(), await objects()]) === JSON.stringify([[empty, empty, empty], before]);
    await eventually(settled, 'queues empty and objects as before').catch(() => {});
    expect(await counts()).toEqual([empty, empty, empty]);
    expect(await objects()).toEqual(before);
    // Every rank ended: the bad one failed, its peers stopped when the job failed (or never started).
    const open = (await jobs.get('dp-bad')).tasks.filter((t) => t.state !== 'failed' && t.state !== 'cancelled');
    expect(open).toEqual([]);
  }, 120_000);
});
