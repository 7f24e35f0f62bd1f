/**
 * Messages between an InferencePool and its worker threads, in one place.
 * Errors travel as `{code, message}` and become TrellisErrors on arrival.
 */
import type { ErrorPayload } from '../errors.js';
import { TrellisError } from '../errors.js';
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

/** Any thrown value as a wire error; what is not a TrellisError becomes ERR_WORKER_FAILED with its message. */
export function errorPayload(e: unknown): ErrorPayload {
  if (e instanceof TrellisError) return e.toPayload();
  // A TrellisError from another copy of the module (src vs dist) still carries a code.
  const maybe = e as { code?: unknown; message?: unknown; name?: unknown };
  if (maybe && maybe.name === 'TrellisError' && typeof maybe.code === 'string') {
    return { code: maybe.code, message: String(maybe.message) };
  }
  return { code: 'ERR_WORKER_FAILED', message: e instanceof Error ? (e.stack ?? e.message) : String(e) };
}
