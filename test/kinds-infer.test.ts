/**
 * The infer kind, called as the agent calls it: a stored model over a
 * shard's features in a task host; outputs compared with an in-process
 * ModelSession run over the same data.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Tensor, type TrellisClient, tensor } from '../dist/src/index.js';
import type { InferJobSpec } from '../dist/src/jobs/job-types.js';
import { runners } from '../dist/src/jobs/kinds/index.js';
import type { TaskPayload } from '../dist/src/jobs/task-types.js';
import { writeDataset } from '../dist/src/loaders/shard-writer.js';
import { inferenceModel, initParams, ModelSession, putModel } from '../dist/src/models/index.js';
import { startStore } from './helpers/store.js';
import { failure, taskContext } from './helpers/task-context.js';

const SPEC = { kind: 'mlp', hidden: 16, input: 'uint8' } as const;
// The first shard is bigger than one onnxruntime run (8192 rows), so it is run in chunks.
const ROWS = 10_500;

let env: Awaited<ReturnType<typeof startStore>>;
let client: TrellisClient;
let shards: string[];
const images = new Uint8Array(ROWS * 784);

beforeAll(async () => {
  env = await startStore();
  client = await connect({ socket: env.socket });
  for (let i = 0; i < images.length; i++) images[i] = (i * 2654435761) >>> 24;
  ({ shards } = await writeDataset(client, 'kinds/infer', {
    features: tensor('uint8', [ROWS, 28, 28], images),
    labels: new Uint8Array(ROWS),
    shardRows: 10_000,
  }));
  await putModel(client, inferenceModel(SPEC, { weights: initParams(SPEC, 5) }).bytes, { name: 'kinds/mlp' });
});
afterAll(async () => {
  await client?.close();
  await env?.stop();
});

function payload(jobId: string, index: number, model = 'kinds/mlp'): TaskPayload {
  const spec: InferJobSpec = { kind: 'infer', dataset: 'kinds/infer', model };
  return { jobId, index, spec, shards: [shards[index]] };
}

describe('infer runner', () => {
  it('stores the model’s predictions for each shard, equal to an in-process run over the same rows', async () => {
    await using reference = await ModelSession.fromStore(client, 'kinds/mlp', { intraOpNumThreads: 1 });
    const bounds = [
      [0, 10_000],
      [10_000, ROWS],
    ];
    for (let i = 0; i < shards.length; i++) {
      const out = await runners.infer(payload('infer-1', i), taskContext(client, env.socket, [shards[i]]).ctx);
      const [start, end] = bounds[i];
      const X: Tensor = { dtype: 'uint8', shape: [end - start, 784], data: images.subarray(start * 784, end * 784) };
      const want = await reference.run({ X });
      const got = (await client.get(out.outputId!)) as Tensor;
      expect({ dtype: got.dtype, shape: got.shape, data: Array.from(got.data as BigInt64Array) }).toEqual({
        dtype: 'int64',
        shape: [end - start],
        data: Array.from(want.pred.data as BigInt64Array),
      });
      expect(await client.getName(`infer-1/output/${i}`)).toBe(out.outputId);
      await client.release(out.outputId!);
    }
  });

  it('answers ERR_NAME_NOT_FOUND for a model that was never stored', async () => {
    const f = await failure(
      runners.infer(payload('infer-2', 1, 'kinds/none'), taskContext(client, env.socket, [shards[1]]).ctx),
    );
    expect(f.code).toBe('ERR_NAME_NOT_FOUND');
  });

  it('refuses a model whose input does not take the shard’s features', async () => {
    const floatSpec = { kind: 'softmax' } as const; // float32 X, the shard has uint8
    await putModel(client, inferenceModel(floatSpec, { weights: initParams(floatSpec, 1) }).bytes, {
      name: 'kinds/float',
    });
    const f = await failure(
      runners.infer(payload('infer-3', 1, 'kinds/float'), taskContext(client, env.socket, [shards[1]]).ctx),
    );
    expect(f).toEqual({
      code: 'ERR_BAD_REQUEST',
      message: 'Expected inputs.X.dtype to be float32 but received string "uint8"',
    });
  });
});
