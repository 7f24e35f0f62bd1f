/**
 * Messages between an InferencePool and its worker threads, in one place.
 * Errors travel as `{code, message}` (asTrellisError(e, 'ERR_WORKER_FAILED')
 * .toPayload() in the worker) and become TrellisErrors on arrival (fromPayload).
 */
import type { ErrorPayload } from '../errors.js';
import type { ModelSessionOptions, ModelValue } from './ort-adapter.js';

/** What each worker starts with (its workerData). */
export interface WorkerInit {
  socket: string;
  model: string;
  sessionOptions: ModelSessionOptions;
}

/** Pool → worker. */
export type ToInferenceWorker =
  | { t: 'run'; rid: number; inputs: Record<string, string>; names?: Record<string, string> }
  /** Finish the runs in hand, release everything, exit. */
  | { t: 'close' }
  /**
   * End the thread at once, as a crash would, dropping what it holds. Safe
   * where Worker.terminate() is not: it is handled between runs, never while
   * onnxruntime's (synchronous) run is inside native code, which a terminate
   * can interrupt and turn into a process-wide abort.
   */
  | { t: 'exit'; code: number };

/** Worker → pool. */
export type FromInferenceWorker =
  | { t: 'ready'; inputs: ModelValue[]; outputs: ModelValue[] }
  | { t: 'fatal'; error: ErrorPayload }
  | { t: 'done'; rid: number; outputs: Record<string, string> }
  | { t: 'err'; rid: number; error: ErrorPayload };
