/**
 * K worker threads, each with its own store connection and its own
 * onnxruntime session over one model blob in the store. `run` takes input
 * object ids and resolves with output object ids; tensors never cross the
 * thread boundary, only ids do, and the caller's event loop never runs
 * inference (onnxruntime's `run` blocks the thread that calls it).
 *
 * Each worker takes up to `maxInFlight` requests at a time, so one request's
 * store round trips overlap another's inference; the rest wait in a FIFO
 * queue here.
 *
 * @example
 *   await putModel(client, inferenceModel({ kind: 'mlp' }, { weights }).bytes, { name: 'mlp' });
 *   await using pool = await InferencePool.start({ socket, model: 'mlp', workers: 2 });
 *   const { probs, pred } = await pool.run({ X: xId });   // ids of new tensors in the store
 */
import { Worker } from 'node:worker_threads';
import { invalidParameter, TrellisError } from '../errors.js';
import { builtScript } from '../package-root.js';
import { isObjectId } from '../protocol/messages.js';
import type { FromInferenceWorker, ToInferenceWorker, WorkerInit } from './inference-messages.js';
import {
  checkInputNames,
  checkOutputNames,
  type ModelSessionOptions,
  type ModelValue,
  type RunToStoreOptions,
} from './ort-adapter.js';

export interface InferencePoolOptions {
  /** The model: id or name of a blob holding ONNX bytes (see putModel). */
  model: string;
  /** The store's socket (default $TRELLIS_SOCKET or /tmp/trellis.sock). */
  socket?: string;
  /** Worker threads (default 2). */
  workers?: number;
  /** Requests each worker holds at once (default 2). */
  maxInFlight?: number;
  /** onnxruntime session options; intraOpNumThreads defaults to 1 so K workers use K cores. */
  sessionOptions?: ModelSessionOptions;
  /** How long start waits for every worker's session (default 60 s). */
  startTimeoutMs?: number;
}

interface Request {
  rid: number;
  msg: Extract<ToInferenceWorker, { t: 'run' }>;
  resolve: (ids: Record<string, string>) => void;
  reject: (e: TrellisError) => void;
}

interface WorkerSlot {
  worker: Worker;
  inFlight: Map<number, Request>;
  alive: boolean;
  /** Why the worker died, when it did. */
  failure?: string;
  exited: Promise<void>;
}

export class InferencePool {
  private readonly queue: Request[] = [];
  private nextRid = 1;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly slots: WorkerSlot[],
    private readonly maxInFlight: number,
    /** The model's inputs (names, dtypes, shapes). */
    readonly inputs: readonly ModelValue[],
    /** The model's outputs. */
    readonly outputs: readonly ModelValue[],
  ) {
    for (const slot of slots) this.attach(slot);
  }

  /** Starts the workers and resolves once every one has its session; rejects with the first worker's error. */
  static async start(opts: InferencePoolOptions): Promise<InferencePool> {
    if (typeof opts !== 'object' || opts === null) throw invalidParameter('opts', 'an object', opts);
    if (typeof opts.model !== 'string' || opts.model.length === 0)
      throw invalidParameter('model', 'an object id or a name', opts.model);
    const socket = opts.socket ?? process.env.TRELLIS_SOCKET ?? '/tmp/trellis.sock';
    if (typeof socket !== 'string' || socket.length === 0) throw invalidParameter('socket', 'a socket path', socket);
    const count = opts.workers ?? 2;
    if (!Number.isSafeInteger(count) || count < 1 || count > 256)
      throw invalidParameter('workers', 'an integer from 1 to 256', count);
    const maxInFlight = opts.maxInFlight ?? 2;
    if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1)
      throw invalidParameter('maxInFlight', 'a positive integer', maxInFlight);
    const timeoutMs = opts.startTimeoutMs ?? 60_000;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1)
      throw invalidParameter('startTimeoutMs', 'a positive integer', timeoutMs);

    const init: WorkerInit = {
      socket,
      model: opts.model,
      sessionOptions: { intraOpNumThreads: 1, ...(opts.sessionOptions ?? {}) },
    };
    const script = builtScript('models/inference-worker.js');
    const slots: WorkerSlot[] = [];
    const ready: Promise<Extract<FromInferenceWorker, { t: 'ready' }>>[] = [];
    for (let i = 0; i < count; i++) {
      const worker = new Worker(script, { workerData: init, name: `trellis inference ${i}` });
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      slots.push({ worker, inFlight: new Map(), alive: true, exited });
      ready.push(firstAnswer(worker, timeoutMs));
    }
    let answers: Extract<FromInferenceWorker, { t: 'ready' }>[];
    try {
      answers = await Promise.all(ready);
    } catch (e) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw e;
    }
    return new InferencePool(slots, maxInFlight, answers[0].inputs, answers[0].outputs);
  }

  /** Workers still running. */
  get workers(): number {
    return this.slots.filter((s) => s.alive).length;
  }

  /** Requests waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Runs the model on stored tensors, by input name → object id, and resolves
   * with output name → id of a new sealed tensor (owned by the caller: delete
   * it when done). Names, ids and options are checked here; dtypes and shapes
   * in the worker, before onnxruntime; failures come back as TrellisErrors
   * with their codes.
   */
  run(inputIds: Record<string, string>, opts: RunToStoreOptions = {}): Promise<Record<string, string>> {
    if (this.closing) return Promise.reject(new TrellisError('ERR_CLOSED', 'the inference pool was closed'));
    if (!this.slots.some((s) => s.alive)) {
      return Promise.reject(new TrellisError('ERR_WORKER_FAILED', 'every inference worker has stopped'));
    }
    try {
      this.check(inputIds, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    const rid = this.nextRid++;
    const msg: ToInferenceWorker = { t: 'run', rid, inputs: { ...inputIds } };
    if (opts.names) msg.names = { ...opts.names };
    return new Promise((resolve, reject) => {
      this.queue.push({ rid, msg, resolve, reject });
      this.dispatch();
    });
  }

  /**
   * Stops taking requests, fails queued ones with ERR_CLOSED, lets the
   * workers finish the requests they hold, then ends them. Safe to call twice.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        for (const r of this.queue.splice(0)) r.reject(new TrellisError('ERR_CLOSED', 'the inference pool was closed'));
        await Promise.all(
          this.slots.map(async (s) => {
            if (s.alive) s.worker.postMessage({ t: 'close' } satisfies ToInferenceWorker);
            const timer = setTimeout(() => void s.worker.terminate(), 30_000);
            await s.exited;
            clearTimeout(timer);
          }),
        );
      })();
    }
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private check(inputIds: Record<string, string>, opts: RunToStoreOptions): void {
    if (typeof inputIds !== 'object' || inputIds === null)
      throw invalidParameter('inputIds', 'an object of input name → object id', inputIds);
    checkInputNames(this.inputs, Object.keys(inputIds));
    for (const [k, id] of Object.entries(inputIds)) {
      if (!isObjectId(id)) throw invalidParameter(`inputIds.${k}`, 'an object id', id);
    }
    if (typeof opts !== 'object' || opts === null) throw invalidParameter('opts', 'an object', opts);
    if (opts.names !== undefined) {
      if (typeof opts.names !== 'object' || opts.names === null)
        throw invalidParameter('opts.names', 'an object of output name → name', opts.names);
      checkOutputNames(this.outputs, Object.keys(opts.names));
      for (const [k, v] of Object.entries(opts.names)) {
        if (typeof v !== 'string' || v.length === 0 || v.length > 1024)
          throw invalidParameter(`opts.names.${k}`, 'a string of 1 to 1024 characters', v);
      }
    }
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let best: WorkerSlot | undefined;
      for (const s of this.slots) {
        if (s.alive && s.inFlight.size < this.maxInFlight && (!best || s.inFlight.size < best.inFlight.size)) best = s;
      }
      if (!best) return;
      const r = this.queue.shift()!;
      best.inFlight.set(r.rid, r);
      best.worker.postMessage(r.msg);
    }
  }

  private attach(slot: WorkerSlot): void {
    slot.worker.on('message', (m: FromInferenceWorker) => {
      if (m.t !== 'done' && m.t !== 'err') return;
      const r = slot.inFlight.get(m.rid);
      if (!r) return;
      slot.inFlight.delete(m.rid);
      if (m.t === 'done') r.resolve(m.outputs);
      else r.reject(TrellisError.fromPayload(m.error));
      this.dispatch();
    });
    slot.worker.on('error', (e) => {
      slot.failure = e instanceof Error ? e.message : String(e);
    });
    slot.worker.once('exit', (code) => {
      slot.alive = false;
      const why = slot.failure ?? `exit code ${code}`;
      for (const r of slot.inFlight.values()) {
        r.reject(new TrellisError('ERR_WORKER_FAILED', `inference worker stopped before answering (${why})`));
      }
      slot.inFlight.clear();
      if (!this.slots.some((s) => s.alive)) {
        for (const r of this.queue.splice(0)) {
          const e = this.closing
            ? new TrellisError('ERR_CLOSED', 'the inference pool was closed')
            : new TrellisError('ERR_WORKER_FAILED', `every inference worker has stopped (last: ${why})`);
          r.reject(e);
        }
      } else {
        this.dispatch();
      }
    });
  }
}

/** Resolves with a worker's 'ready', rejects with its 'fatal' error, its death or a timeout. */
function firstAnswer(worker: Worker, timeoutMs: number): Promise<Extract<FromInferenceWorker, { t: 'ready' }>> {
  return new Promise((resolve, reject) => {
    let failure = '';
    const done = () => {
      clearTimeout(timer);
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const onMessage = (m: FromInferenceWorker) => {
      if (m.t === 'ready') {
        done();
        resolve(m);
      } else if (m.t === 'fatal') {
        done();
        reject(TrellisError.fromPayload(m.error));
      }
    };
    const onError = (e: unknown) => {
      failure = e instanceof Error ? e.message : String(e);
    };
    const onExit = (code: number) => {
      done();
      reject(new TrellisError('ERR_WORKER_FAILED', `inference worker exited while starting (${failure || code})`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new TrellisError('ERR_TIMEOUT', `inference worker did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}
