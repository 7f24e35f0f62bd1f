/**
 * Messages between a runner (in the agent) and its task host (a child
 * process), in one place. Only ids, specs and small records cross; data
 * stays in the store. Errors travel as `{code, message}` and become
 * TrellisErrors on arrival.
 */
import type { ErrorPayload } from '../../errors.js';
import type { JobKind, JobProgress } from '../job-types.js';
import type { TaskOutput, TaskPayload } from '../task-types.js';

/** Runner → host. */
export type ToHost =
  /** The one task this host runs; sent once, right after the fork. */
  | {
      t: 'start';
      kind: JobKind;
      payload: TaskPayload;
      socket: string;
      node: string;
      localShards: string[];
      handlerDirs: string[];
    }
  /** The task was cancelled: fire the task's AbortSignal. */
  | { t: 'abort' };

/** Host → runner. */
export type FromHost =
  | { t: 'progress'; progress: JobProgress }
  | { t: 'log'; line: string }
  | { t: 'done'; output: TaskOutput }
  | { t: 'err'; error: ErrorPayload };
