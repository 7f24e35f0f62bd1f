/**
 * The job kinds, as the agent calls them: `runners[kind](payload, ctx)` after
 * it has moved the task's inputs to its node. Each runner hands the task to
 * a task host (a child process, task-host.ts; a warm, spare or new one,
 * host-pool.ts) that is connected to the node's store itself and runs the
 * kind's body there — map-task.ts, infer-task.ts, train-task.ts — so
 * nothing CPU-bound runs on the agent's event loop. An agent calls
 * keepSpareHosts(socket, n) at start and closeSpareHosts() at shutdown.
 *
 * What a runner expects of ctx: `socket` of this node's store (the host
 * connects to it), `localShards` (local ids, one per payload shard),
 * `handlerDirs` (map), `signal` (cancel; the runner settles within about a
 * second of it), `progress` and `log` (called from the host's messages).
 * `ctx.client` is not used: the host has its own.
 *
 * @example
 *   const out = await runners.map(payload, ctx); // { outputId } — commit it once
 */
import type { JobKind } from '../job-types.js';
import type { TaskRunner } from '../task-types.js';
import { runInHost } from './task-host.js';

export { isHandlerName, listHandlers, resolveHandler } from './handlers.js';
export {
  closeSpareHosts,
  keepSpareHosts,
  MAX_TASKS_PER_HOST,
  spareHostPids,
  WARM_IDLE_MS,
  warmHostPids,
} from './host-pool.js';
export { CANCEL_GRACE_MS } from './task-host.js';

export const runners: Record<JobKind, TaskRunner> = {
  map: (payload, ctx) => runInHost('map', payload, ctx),
  infer: (payload, ctx) => runInHost('infer', payload, ctx),
  train: (payload, ctx) => runInHost('train', payload, ctx),
};
