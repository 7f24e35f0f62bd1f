/**
 * The body of an infer task, in its task host: a ModelSession over the
 * stored model (spec.model, a name given to putModel) runs over the shard's
 * features, read as views, and writes its output straight into one new
 * arena tensor for the whole shard, which becomes the shard's output.
 *
 * A session in the host rather than the InferencePool: the host is already
 * off the agent's event loop, and the pool takes input object ids, while a
 * shard's features are a member of a Shard object or a column of an Arrow
 * record batch, so feeding the pool would mean copying them into objects of
 * their own first.
 *
 * The output is the model's `pred` when it has one (class indices, [rows]),
 * else its first output; it must have one row per input row. The model's
 * one input takes the shard's features as they are stored, flattened to
 * [rows, features] when the model declares a 2-d input.
 */
import type { Tensor } from '../../codecs/tensor.js';
import { TrellisError } from '../../errors.js';
import { type ShardPart, shardParts } from '../../loaders/shard.js';
import { ModelSession } from '../../models/ort-adapter.js';
import type { InferJobSpec } from '../job-types.js';
import type { TaskOutput, TaskPayload } from '../task-types.js';
import type { HostContext } from './host-context.js';
import { nameOutput, shardTaskStart } from './task-output.js';

/** Rows per onnxruntime run: bounds the runtime's intermediate buffers (an MLP's hidden layer) for big shards. */
const CHUNK_ROWS = 8_192;

export async function inferTask(payload: TaskPayload, ctx: HostContext): Promise<TaskOutput> {
  const spec = payload.spec as InferJobSpec;
  const { shardId, name, earlier } = await shardTaskStart(payload, ctx, `model ${spec.model}`);
  if (earlier) return { outputId: earlier };
  // An unknown model name is ERR_NAME_NOT_FOUND, from the store.
  await using session = await ModelSession.fromStore(ctx.client, spec.model, { intraOpNumThreads: 1 });
  if (session.inputs.length !== 1) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `model ${spec.model} has inputs ${session.inputs.map((i) => i.name).join(', ')}; an infer job feeds one (the features)`,
    );
  }
  const input = session.inputs[0];
  const output = session.outputs.find((o) => o.name === 'pred') ?? session.outputs[0];
  const shard = await ctx.client.get(shardId);
  try {
    const chunks = chunksOf(shardParts(shard, shardId), input.shape?.length === 2);
    // Every chunk's output shape, from the model's declared shapes: one output row per input row.
    const shapes = chunks.map((X) => {
      const shape = session.outputShapes({ [input.name]: X })[output.name];
      if (!shape || shape[0] !== X.shape[0]) {
        throw new TrellisError(
          'ERR_UNSUPPORTED',
          `output ${output.name} of model ${spec.model} does not have one row per input row (shape ${shape ? `[${shape}]` : 'unknown'})`,
        );
      }
      return shape;
    });
    const rows = shapes.reduce((n, s) => n + s[0], 0);
    const rest = shapes[0]?.slice(1) ?? [];
    const writer = await ctx.client.createTensor(output.dtype, [rows, ...rest]);
    try {
      const perRow = rest.reduce((a, b) => a * b, 1);
      let row = 0;
      for (let i = 0; i < chunks.length; i++) {
        ctx.signal.throwIfAborted();
        const n = shapes[i][0];
        const into: Tensor = {
          dtype: output.dtype,
          shape: shapes[i],
          data: writer.data.subarray(row * perRow, (row + n) * perRow),
        };
        await session.run({ [input.name]: chunks[i] }, { [output.name]: into });
        row += n;
      }
    } catch (e) {
      await writer.abort().catch(() => {});
      throw e;
    }
    const id = await writer.seal({ persist: true });
    return { outputId: await nameOutput(ctx.client, name, id) };
  } finally {
    await ctx.client.release(shardId);
  }
}

/** The shard's features as views of at most CHUNK_ROWS rows each, flattened to [rows, features] when asked. */
function chunksOf(parts: ShardPart[], flatten: boolean): Tensor[] {
  const out: Tensor[] = [];
  for (const p of parts) {
    const perRow = p.rows === 0 ? 0 : p.x.data.length / p.rows;
    const sample = flatten ? [perRow] : p.x.shape.slice(1);
    for (let start = 0; start < p.rows; start += CHUNK_ROWS) {
      const end = Math.min(p.rows, start + CHUNK_ROWS);
      out.push({
        dtype: p.x.dtype,
        shape: [end - start, ...sample],
        data: p.x.data.subarray(start * perRow, end * perRow),
      });
    }
  }
  return out;
}
