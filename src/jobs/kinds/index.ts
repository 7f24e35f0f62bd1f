/**
 * STAND-IN for the job kinds (branch `engine` only). The kinds branch replaces
 * this file with the real train, map and infer runners (off the event loop);
 * it exists so the engine's tests run before that merge. The engine talks to
 * kinds only through `runners[kind](payload, ctx)`.
 *
 * map: loads the handler module `<name>.js` or `<name>.mjs` from the first
 * --handlers directory that has it, calls its default export in this thread
 * with the shard's parts, and stores the returned value on this node.
 * train and infer: ERR_UNSUPPORTED.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { PutValue } from '../../client/client.js';
import { TrellisError } from '../../errors.js';
import { shardParts } from '../../loaders/shard.js';
import type { JobKind } from '../job-types.js';
import type { TaskRunner } from '../task-types.js';

/** The module file of handler `name`, or ERR_HANDLER_NOT_FOUND. */
export function resolveHandler(name: string, dirs: string[]): string {
  for (const dir of dirs) {
    for (const ext of ['.js', '.mjs']) {
      const file = join(dir, name + ext);
      if (existsSync(file)) return file;
    }
  }
  throw new TrellisError(
    'ERR_HANDLER_NOT_FOUND',
    `no handler ${JSON.stringify(name)} in ${dirs.length ? dirs.join(', ') : '(no --handlers directories)'}`,
  );
}

const map: TaskRunner = async (payload, ctx) => {
  if (payload.spec.kind !== 'map') throw new TrellisError('ERR_INTERNAL', 'map runner given a non-map task');
  const file = resolveHandler(payload.spec.handler, ctx.handlerDirs);
  const mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  if (typeof mod.default !== 'function')
    throw new TrellisError('ERR_BAD_REQUEST', `handler ${file} has no default export function`);
  const shardId = ctx.localShards[0];
  const parts = shardParts(await ctx.client.get(shardId), shardId);
  const value = await (mod.default as (a: unknown) => Promise<unknown>)({
    shardId,
    parts,
    client: ctx.client,
    args: payload.spec.args,
    signal: ctx.signal,
    log: ctx.log,
  });
  ctx.signal.throwIfAborted();
  const outputId = await ctx.client.put(value as PutValue, { persist: true });
  await ctx.client.release(shardId).catch(() => {});
  return { outputId };
};

const unsupported =
  (kind: string): TaskRunner =>
  async () => {
    throw new TrellisError('ERR_UNSUPPORTED', `${kind} jobs are not in this build (stand-in kinds)`);
  };

export const runners: Record<JobKind, TaskRunner> = {
  map,
  train: unsupported('train'),
  infer: unsupported('infer'),
};
