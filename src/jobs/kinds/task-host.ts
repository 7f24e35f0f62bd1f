/**
 * Runs one task in a task host: a child process (host-pool.ts says which
 * one). The agent's event loop only relays messages, so BullMQ's lock
 * renewal never waits for a handler or onnxruntime.
 *
 * A process rather than a worker thread, because a task must not be able to
 * take the agent down: a handler that writes into a read-only store view
 * gets SIGSEGV, one that calls process.exit() or spins forever must be
 * stoppable, and terminating a worker thread while onnxruntime is inside
 * native code can abort the whole process. A process costs more to start
 * (~0.3 s here with the client loaded and connected, against ~0.13 s for a
 * thread); spares and warm hosts (host-pool.ts) keep that off most tasks.
 *
 * Lifecycle of a task: `start` → progress/log messages → `done` (the host is
 * kept for the job's next task or told to exit) or `err` (the host closes
 * its client and exits) → the runner settles; a host that exits without
 * answering fails the task with ERR_WORKER_FAILED. Cancel (ctx.signal)
 * sends `abort`; the host fires the task's own signal, and if it has not
 * exited within CANCEL_GRACE_MS it is killed (SIGKILL). A cancelled task
 * always rejects, whatever the host answered: with the abort reason's code
 * when it is a TrellisError, ERR_CANCELLED otherwise.
 */
import { TrellisError } from '../../errors.js';
import type { JobKind } from '../job-types.js';
import type { TaskContext, TaskOutput, TaskPayload } from '../task-types.js';
import type { FromHost, ToHost } from './host-messages.js';
import { type Host, releaseHost, takeHost } from './host-pool.js';

/** How long a cancelled host may take to stop by itself before it is killed. */
export const CANCEL_GRACE_MS = 1_000;
/** How long a host that answered with an error may take to exit (a handler may leave timers behind). */
const EXIT_GRACE_MS = 2_000;
/** Bytes of the host's stderr kept for the message of a crash. */
const STDERR_TAIL = 2_048;

export function runInHost(kind: JobKind, payload: TaskPayload, ctx: TaskContext): Promise<TaskOutput> {
  if (payload?.spec?.kind !== kind) {
    return Promise.reject(
      new TrellisError('ERR_BAD_REQUEST', `a ${kind} runner got a task of kind ${String(payload?.spec?.kind)}`),
    );
  }
  if (!Array.isArray(ctx.localShards) || ctx.localShards.length !== payload.shards.length) {
    return Promise.reject(
      new TrellisError(
        'ERR_BAD_REQUEST',
        `ctx.localShards must hold one local id per payload shard (${payload.shards.length})`,
      ),
    );
  }
  if (ctx.signal.aborted) return Promise.reject(cancelled(ctx.signal.reason, 'it had not started'));
  let host: Host;
  try {
    host = takeHost(ctx.socket, payload.jobId);
  } catch (e) {
    return Promise.reject(e);
  }
  return supervise(host, kind, payload, ctx);
}

function supervise(host: Host, kind: JobKind, payload: TaskPayload, ctx: TaskContext): Promise<TaskOutput> {
  const child = host.child;
  return new Promise((resolve, reject) => {
    let failed: TrellisError | null = null;
    let aborted = false;
    let killedForCancel = false;
    let stderr = '';
    let timer: NodeJS.Timeout | null = null;
    let settled = false;
    const detach: (() => void)[] = [];
    // biome-ignore lint/suspicious/noExplicitAny: an EventEmitter listener takes whatever its event carries
    const on = (emitter: NodeJS.EventEmitter, event: string, fn: (...args: any[]) => void) => {
      emitter.on(event, fn);
      detach.push(() => emitter.off(event, fn));
    };

    const relayLines = (stream: NodeJS.ReadableStream | null, prefix: string) => {
      if (!stream) return;
      let buf = '';
      stream.setEncoding('utf8');
      on(stream, 'data', (d: string) => {
        if (prefix) stderr = (stderr + d).slice(-STDERR_TAIL);
        buf += d;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line) ctx.log(prefix + line);
        }
      });
    };
    // What a handler prints is part of the task's log.
    relayLines(child.stdout, '');
    relayLines(child.stderr, 'stderr: ');

    const send = (m: ToHost) => {
      if (child.connected) child.send(m, () => {});
    };
    const finish = (result: TaskOutput | TrellisError) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      ctx.signal.removeEventListener('abort', onAbort);
      for (const off of detach) off();
      if (result instanceof TrellisError) reject(result);
      else resolve(result);
    };
    const onAbort = () => {
      if (aborted) return;
      aborted = true;
      send({ t: 'abort' });
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        killedForCancel = true;
        child.kill('SIGKILL');
      }, CANCEL_GRACE_MS);
    };

    on(child, 'message', (m: FromHost) => {
      if (settled || failed) return;
      switch (m.t) {
        case 'progress':
          if (!aborted) ctx.progress(m.progress);
          break;
        case 'log':
          ctx.log(m.line);
          break;
        case 'done':
          if (aborted) {
            // finished anyway, but the task is cancelled: the host goes (the exit event settles)
            send({ t: 'exit' });
          } else {
            finish(m.output);
            releaseHost(ctx.socket, payload.jobId, host);
          }
          break;
        case 'err':
          // the host exits after an error; the exit event settles
          failed = TrellisError.fromPayload(m.error);
          if (!aborted) timer = setTimeout(() => child.kill('SIGKILL'), EXIT_GRACE_MS);
          break;
      }
    });
    on(child, 'error', (e: Error) => {
      // fork failed: there is no process whose exit would settle the task
      if (child.pid === undefined)
        finish(new TrellisError('ERR_WORKER_FAILED', `cannot start a task host: ${e.message}`));
    });
    on(child, 'exit', (code: number | null, signal: NodeJS.Signals | null) => {
      if (aborted) {
        finish(
          cancelled(
            ctx.signal.reason,
            killedForCancel
              ? `its task host did not stop within ${CANCEL_GRACE_MS} ms and was killed`
              : 'its task host stopped',
          ),
        );
      } else if (failed) {
        finish(failed);
      } else {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const tail = stderr.trim() ? `; stderr: ${stderr.trim()}` : '';
        finish(
          new TrellisError(
            'ERR_WORKER_FAILED',
            `the task host (pid ${child.pid}) of ${kind} task ${payload.jobId}#${payload.index} ${how} before answering${tail}`,
          ),
        );
      }
    });

    ctx.signal.addEventListener('abort', onAbort, { once: true });
    send({
      t: 'start',
      kind,
      payload,
      socket: ctx.socket,
      node: ctx.node,
      localShards: ctx.localShards,
      handlerDirs: ctx.handlerDirs,
    });
  });
}

/**
 * The error of a cancelled task: the abort reason's code when the agent gave
 * a TrellisError (e.g. ERR_TIMEOUT for a job timeout, ERR_SHUTTING_DOWN for
 * a drain), ERR_CANCELLED otherwise; the message says how the host ended.
 */
function cancelled(reason: unknown, how: string): TrellisError {
  if (reason instanceof TrellisError) return new TrellisError(reason.code, `${reason.message}; ${how}`);
  return new TrellisError('ERR_CANCELLED', `the task was cancelled; ${how}`);
}
