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
  /** A task to run: the first right after the fork (or when a spare is taken), more for the same job while the host is warm. */
  | {
      t: 'start';
      kind: JobKind;
      payload: TaskPayload;
      socket: string;
      node: string;
      localShards: string[];
      handlerDirs: string[];
    }
  /** The running task was cancelled: fire its AbortSignal. */
  | { t: 'abort' }
  /** No more tasks: close the client and exit. */
  | { t: 'exit' };

/** Host → runner. */
export type FromHost =
  | { t: 'progress'; progress: JobProgress }
  | { t: 'log'; line: string }
  | { t: 'done'; output: TaskOutput }
  | { t: 'err'; error: ErrorPayload };
