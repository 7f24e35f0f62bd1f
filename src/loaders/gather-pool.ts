/**
 * The gather workers of one loader: N child processes running
 * gather-worker.js. The pool hands each task to the worker with the fewest in
 * flight, reports each sealed batch, turns a worker's death or error into one
 * failure, and on close stops every worker, waits until each has exited, and
 * returns the ids of blobs a worker announced but never handed over, so the
 * loader can delete them.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { TrellisError } from '../errors.js';
import { builtScript } from '../package-root.js';
import {
  type BatchMessage,
  checkFromGatherWorker,
  type InitMessage,
  type TaskMessage,
  type ToGatherWorker,
} from './gather-messages.js';

/** How long a stopped worker may take to exit before it is killed. */
const STOP_GRACE_MS = 5_000;
/** How much of a worker's stderr to keep for the failure message. */
const STDERR_TAIL = 2_000;

export interface PoolEvents {
  batch(msg: BatchMessage): void;
  /** Called once, with the first failure. */
  failure(err: TrellisError): void;
}

class WorkerHandle {
  inflight = 0;
  /** Batches the loader adopted, to acknowledge with the next task. */
  acks: string[] = [];
  /** Blobs announced (alloc) and not yet handed over (batch). */
  readonly allocs = new Set<string>();
  stopping = false;
  stderr = '';
  readonly gone: Promise<void>;
  exitStatus = '';

  constructor(
    readonly index: number,
    readonly proc: ChildProcess,
  ) {
    const exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitStatus = signal ? `signal ${signal}` : `code ${code}`;
        resolve();
      });
    });
    // Messages sent before the worker died are delivered before the channel reports closed.
    const disconnected = new Promise<void>((resolve) => {
      if (!proc.connected) resolve();
      else proc.once('disconnect', () => resolve());
    });
    this.gone = Promise.all([exited, disconnected]).then(() => {});
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-STDERR_TAIL);
    });
  }

  get name(): string {
    return `loader worker ${this.index} (pid ${this.proc.pid})`;
  }

  send(m: ToGatherWorker): void {
    // A worker that just died makes the write fail (EPIPE); its exit reports the failure.
    if (this.proc.connected) this.proc.send(m, (err) => void err);
  }
}

export class GatherPool {
  private failed = false;
  /** Which worker made each batch not yet acknowledged. */
  private readonly owners = new Map<string, WorkerHandle>();
  private closing: Promise<string[]> | null = null;

  private constructor(
    private readonly workers: WorkerHandle[],
    private readonly events: PoolEvents,
  ) {}

  /** Forks `n` workers and waits until each has mapped the shards. */
  static async start(n: number, init: Omit<InitMessage, 't'>, events: PoolEvents): Promise<GatherPool> {
    const script = builtScript('loaders/gather-worker.js');
    const readies: Promise<void>[] = [];
    const workers: WorkerHandle[] = [];
    let pool: GatherPool | null = null;
    let startFailure: TrellisError | null = null;
    const fail = (err: TrellisError) => {
      if (pool) pool.fail(err);
      else startFailure ??= err;
    };
    for (let i = 0; i < n; i++) {
      const proc = fork(script, [], {
        execArgv: [],
        serialization: 'json',
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
      const w = new WorkerHandle(i, proc);
      workers.push(w);
      readies.push(
        new Promise<void>((resolve, reject) => {
          let ready = false;
          proc.on('message', (raw) => {
            let m: ReturnType<typeof checkFromGatherWorker>;
            try {
              m = checkFromGatherWorker(raw);
            } catch (e) {
              fail(e as TrellisError);
              return;
            }
            switch (m.t) {
              case 'ready':
                ready = true;
                resolve();
                break;
              case 'alloc':
                w.allocs.add(m.id);
                break;
              case 'batch':
                w.allocs.delete(m.id);
                w.inflight--;
                pool?.owners.set(m.id, w);
                pool?.events.batch(m);
                break;
              case 'error': {
                const err = new TrellisError(
                  TrellisError.fromPayload(m).code,
                  m.code === 'ERR_WORKER_FAILED' ? m.message : `${w.name}: ${m.message}`,
                );
                fail(err);
                reject(err);
                break;
              }
            }
          });
          proc.on('error', (e) => {
            const err = new TrellisError('ERR_WORKER_FAILED', `${w.name} could not run: ${e.message}`, { cause: e });
            fail(err);
            reject(err);
          });
          void w.gone.then(() => {
            if (w.stopping) return;
            const tail = w.stderr.trim() ? `; its stderr ends: ${w.stderr.trim().slice(-600)}` : '';
            const err = new TrellisError('ERR_WORKER_FAILED', `${w.name} exited with ${w.exitStatus}${tail}`);
            fail(err);
            if (!ready) reject(err);
          });
        }),
      );
      w.send({ t: 'init', ...init });
    }
    pool = new GatherPool(workers, events);
    try {
      await Promise.all(readies);
      if (startFailure) throw startFailure;
    } catch (e) {
      await pool.close();
      throw startFailure ?? e;
    }
    return pool;
  }

  /** The workers' process ids. */
  get pids(): number[] {
    return this.workers.map((w) => w.proc.pid ?? -1);
  }

  /** Hands a task to the worker with the fewest tasks in flight. */
  submit(task: Omit<TaskMessage, 't' | 'acks'>): void {
    let best = this.workers[0];
    for (const w of this.workers) if (w.inflight < best.inflight) best = w;
    best.inflight++;
    best.send({ t: 'task', ...task, acks: best.acks });
    best.acks = [];
  }

  /** The loader owns batch `id` now (pinned and deleted): its worker need not clean it up. */
  ack(id: string): void {
    const w = this.owners.get(id);
    this.owners.delete(id);
    w?.acks.push(id);
  }

  private fail(err: TrellisError): void {
    if (this.failed || this.closing) return;
    this.failed = true;
    this.events.failure(err);
  }

  /**
   * Stops every worker (SIGKILL after a grace period) and waits until all are
   * gone; resolves with the ids of blobs announced but never handed over.
   * Safe to call twice.
   */
  close(): Promise<string[]> {
    this.closing ??= (async () => {
      await Promise.all(
        this.workers.map(async (w) => {
          w.stopping = true;
          w.send({ t: 'stop' });
          let timer: NodeJS.Timeout | undefined;
          const grace = new Promise<'late'>((resolve) => {
            timer = setTimeout(() => resolve('late'), STOP_GRACE_MS);
          });
          if ((await Promise.race([w.gone, grace])) === 'late') {
            w.proc.kill('SIGKILL');
            await w.gone;
          }
          clearTimeout(timer);
        }),
      );
      return this.workers.flatMap((w) => [...w.allocs]);
    })();
    return this.closing;
  }
}
