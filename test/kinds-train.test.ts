/**
 * The train kind, called as the agent calls it, on a subset of Fashion-MNIST
 * (the Debian package's files; a generated stand-in of the same shape when
 * they are not installed): progress while it trains, the model stored by
 * name and evaluating to the accuracy it reports, and cancel mid-training.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFashionMnist } from '../dist/examples/training/fashion-mnist.js';
import { connect, type Tensor, type TrellisClient } from '../dist/src/index.js';
import type { TrainJobSpec } from '../dist/src/jobs/job-types.js';
import { runners } from '../dist/src/jobs/kinds/index.js';
import type { TaskPayload } from '../dist/src/jobs/task-types.js';
import { writeDataset } from '../dist/src/loaders/shard-writer.js';
import { ModelSession } from '../dist/src/models/index.js';
import { startStore } from './helpers/store.js';
import { failure, taskContext } from './helpers/task-context.js';

const TRAIN = 6_000;
const TEST = 1_000;

let env: Awaited<ReturnType<typeof startStore>>;
let client: TrellisClient;
let shards: string[];
let test: { images: Uint8Array; labels: Uint8Array };

beforeAll(async () => {
  env = await startStore();
  client = await connect({ socket: env.socket });
  const data = loadFashionMnist();
  ({ shards } = await writeDataset(client, 'fm/train', {
    features: { dtype: 'uint8', shape: [TRAIN, 28, 28], data: data.train.images.subarray(0, TRAIN * 784) },
    labels: data.train.labels.subarray(0, TRAIN),
    shards: 2,
  }));
  test = { images: data.test.images.subarray(0, TEST * 784), labels: data.test.labels.subarray(0, TEST) };
  await writeDataset(client, 'fm/test', {
    features: { dtype: 'uint8', shape: [TEST, 784], data: test.images },
    labels: test.labels,
    shards: 1,
  });
});
afterAll(async () => {
  await client?.close();
  await env?.stop();
});

function payload(jobId: string, spec: Partial<TrainJobSpec>): TaskPayload {
  const full: TrainJobSpec = { kind: 'train', dataset: 'fm/train', model: { kind: 'softmax' }, ...spec };
  return { jobId, index: 0, spec: full, shards, rank: { index: 0, count: 1 } };
}

describe('train runner', () => {
  it('trains, reports progress, stores the model by name and reports the accuracy it has', async () => {
    const rec = taskContext(client, env.socket, shards);
    const out = await runners.train(
      payload('train-1', { evalDataset: 'fm/test', epochs: 2, batchSize: 100, learningRate: 0.3 }),
      rec.ctx,
    );
    // 60 steps an epoch: a report every 20 steps, the last of each epoch among them.
    expect(rec.progress.map((p) => [p.epoch, p.step])).toEqual([
      [0, 20],
      [0, 40],
      [0, 60],
      [1, 80],
      [1, 100],
      [1, 120],
    ]);
    for (const p of rec.progress) {
      expect(Object.keys(p).sort()).toEqual(['epoch', 'etaMs', 'loss', 'samplesPerSec', 'step']);
      expect(p.samplesPerSec).toBeGreaterThan(0);
    }
    expect(rec.progress.at(-1)!.etaMs).toBe(0);
    const [epoch0, epoch1] = [rec.progress[2].loss!, rec.progress[5].loss!];
    expect(epoch1).toBeLessThan(epoch0);
    expect(rec.logs.filter((l) => l.startsWith('epoch '))).toHaveLength(2);

    expect(out.result?.model).toBe('train-1/model');
    expect(out.result?.metrics?.loss).toBe(epoch1);
    const accuracy = out.result!.metrics!.accuracy!;
    // the model by name, run here over the test rows, gets the same right answers
    await using session = await ModelSession.fromStore(client, 'train-1/model', { intraOpNumThreads: 1 });
    const X: Tensor = { dtype: 'uint8', shape: [TEST, 784], data: test.images };
    const { pred } = await session.run({ X });
    let right = 0;
    for (let i = 0; i < TEST; i++) if (Number(pred.data[i]) === test.labels[i]) right++;
    expect(accuracy).toBe(right / TEST);
    expect(accuracy).toBeGreaterThan(0.5); // 120 steps: well past chance (0.1), short of a full run
    // the loader's temporary dataset of the task's shards is gone
    expect((await client.listGlobal({ typename: 'Dataset' })).map((d) => d.meta?.job)).not.toContain('train-1');
  });

  it('trains the same model again on a retry (same seed, same steps)', async () => {
    const a = await runners.train(payload('train-2', { epochs: 1 }), taskContext(client, env.socket, shards).ctx);
    const b = await runners.train(payload('train-2', { epochs: 1 }), taskContext(client, env.socket, shards).ctx);
    expect(b).toEqual(a);
    expect(a.result?.metrics?.accuracy).toBeUndefined();
  });

  it('stops within the grace period when cancelled mid-training', async () => {
    const rec = taskContext(client, env.socket, shards);
    const task = runners.train(payload('train-3', { epochs: 50, model: { kind: 'mlp', hidden: [32] } }), rec.ctx);
    await rec.waitFor((e) => e.progress !== undefined);
    rec.abort.abort();
    expect(await failure(task)).toEqual({
      code: 'ERR_CANCELLED',
      message: 'the task was cancelled; its task host stopped',
    });
    await expect(client.getName('train-3/model')).rejects.toMatchObject({ code: 'ERR_NAME_NOT_FOUND' });
  });

  it('trains an MLP with two hidden layers', async () => {
    const out = await runners.train(
      payload('train-4', { epochs: 1, evalDataset: 'fm/test', model: { kind: 'mlp', hidden: [32, 16] } }),
      taskContext(client, env.socket, shards).ctx,
    );
    expect(out.result?.model).toBe('train-4/model');
    // one epoch of 6000 rows: far past chance (0.1)
    expect(out.result!.metrics!.accuracy!).toBeGreaterThan(0.6);
    await using session = await ModelSession.fromStore(client, 'train-4/model', { intraOpNumThreads: 1 });
    expect(session.inputs).toEqual([{ name: 'X', dtype: 'uint8', shape: ['B', 784] }]);
  });

  it('refuses more than one rank, naming why', async () => {
    const ranks = await failure(
      runners.train(
        { ...payload('train-5', {}), rank: { index: 0, count: 2 } },
        taskContext(client, env.socket, shards).ctx,
      ),
    );
    expect(ranks).toEqual({ code: 'ERR_UNSUPPORTED', message: 'data-parallel training over 2 ranks is not built yet' });
  });
});
