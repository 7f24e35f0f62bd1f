/**
 * What a kind's code sees inside its task host: the agent's TaskContext,
 * rebuilt in the host around the host's own IPC client (its views are
 * zero-copy mappings in this process) and the host's own AbortSignal.
 */
import type { TrellisClient } from '../../client/client.js';
import type { TaskContext, TaskOutput, TaskPayload } from '../task-types.js';

export interface HostContext extends TaskContext {
  client: TrellisClient;
}

/** A kind's body, run inside the task host. */
export type HostedKind = (payload: TaskPayload, ctx: HostContext) => Promise<TaskOutput>;
