/**
 * The body of a map task, in its task host: finds the handler module
 * (resolveHandler over the agent's --handlers directories), decodes the
 * shard as zero-copy views (shardParts), calls the module's default export
 * once, and stores what it returns on this node as the shard's output.
 *
 * The handler contract (docs/ARCHITECTURE.md, "Job kinds"):
 *   export default async function ({ shardId, parts, client, args, signal, log }) { return value; }
 * `value` is a Tensor, a TypedArray or an arrow.Table. A TrellisError thrown
 * by the handler keeps its code; anything else thrown is ERR_HANDLER_FAILED.
 */
import { pathToFileURL } from 'node:url';
import * as arrow from 'apache-arrow';
import type { PutValue } from '../../client/client.js';
import { isTensorLike, isTypedArray } from '../../codecs/tensor.js';
import { asTrellisError, TrellisError } from '../../errors.js';
import { shardParts } from '../../loaders/shard.js';
import type { MapJobSpec } from '../job-types.js';
import type { TaskOutput, TaskPayload } from '../task-types.js';
import { resolveHandler } from './handlers.js';
import type { HostContext } from './host-context.js';
import { nameOutput, shardTaskStart } from './task-output.js';

export async function mapTask(payload: TaskPayload, ctx: HostContext): Promise<TaskOutput> {
  const spec = payload.spec as MapJobSpec;
  const { shardId, name, earlier } = await shardTaskStart(payload, ctx, spec.handler);
  if (earlier) return { outputId: earlier };
  const handler = await loadHandler(spec.handler, ctx.handlerDirs);
  const shard = await ctx.client.get(shardId);
  try {
    const parts = shardParts(shard, shardId);
    let value: unknown;
    try {
      value = await handler({
        shardId,
        parts,
        client: ctx.client,
        args: spec.args,
        signal: ctx.signal,
        log: (line: unknown) => ctx.log(String(line)),
      });
    } catch (e) {
      throw asTrellisError(e, 'ERR_HANDLER_FAILED', `handler ${spec.handler}`);
    }
    ctx.signal.throwIfAborted();
    const id = await ctx.client.put(storable(value, spec.handler), { persist: true });
    return { outputId: await nameOutput(ctx.client, name, id) };
  } finally {
    await ctx.client.release(shardId);
  }
}

type Handler = (input: Record<string, unknown>) => unknown;

async function loadHandler(name: string, dirs: string[]): Promise<Handler> {
  const path = await resolveHandler(name, dirs);
  let mod: { default?: unknown };
  try {
    mod = await import(pathToFileURL(path).href);
  } catch (e) {
    throw asTrellisError(e, 'ERR_HANDLER_FAILED', `handler ${name} (${path}) could not be loaded`);
  }
  if (typeof mod.default !== 'function') {
    throw new TrellisError('ERR_HANDLER_FAILED', `handler ${name} (${path}) has no default export function`);
  }
  return mod.default as Handler;
}

function storable(value: unknown, name: string): PutValue {
  if (value instanceof arrow.Table || isTypedArray(value) || isTensorLike(value)) return value as PutValue;
  const what = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
  throw new TrellisError(
    'ERR_HANDLER_FAILED',
    `handler ${name} returned ${what}; it must return a Tensor, a TypedArray or an arrow.Table`,
  );
}
