/**
 * Runs one task in a task host: a child process of its own, started for the
 * task and gone when it ends. The agent's event loop only relays messages,
 * so BullMQ's lock renewal never waits for a handler or onnxruntime.
 *
 * Forking, loading the client and connecting take ~0.3 s here; an agent
 * that keeps spare hosts (keepSpareHosts) has them done before its tasks
 * arrive. A spare runs one task like any host and is replaced at once.
 *
 * A process rather than a worker thread, because a task must not be able to
 * take the agent down: a handler that writes into a read-only store view
 * gets SIGSEGV, one that calls process.exit() or spins forever must be
 * stoppable, and terminating a worker thread while onnxruntime is inside
 * native code can abort the whole process. A process costs more to start
 * (~0.3 s here with the client loaded and connected, against ~0.13 s for a
 * thread), which a task of real work does not notice.
 *
 * Lifecycle: fork → `start` → progress/log messages → `done` or `err` → the
 * host closes its store client and exits → the runner settles. Cancel
 * (ctx.signal) sends `abort`; the host fires the task's own signal, and if it
 * has not exited within CANCEL_GRACE_MS it is killed (SIGKILL). A cancelled
 * task always rejects, whatever the host answered: with the abort reason's
 * code when it is a TrellisError, ERR_CANCELLED otherwise.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { invalidParameter, TrellisError } from '../../errors.js';
import { builtScript } from '../../package-root.js';
import type { JobKind } from '../job-types.js';
import type { TaskContext, TaskOutput, TaskPayload } from '../task-types.js';
import type { FromHost, ToHost } from './host-messages.js';

/** How long a cancelled host may take to stop by itself before it is killed. */
export const CANCEL_GRACE_MS = 1_000;
/** How long a host that has answered may take to exit (a handler may leave timers behind). */
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
  let child: ChildProcess;
  try {
    child = takeHost(ctx.socket);
  } catch (e) {
    return Promise.reject(e);
  }
  return supervise(child, kind, payload, ctx);
}

/** Idle spare hosts per store socket, and how many each should have. */
const spares = new Map<string, { want: number; idle: ChildProcess[] }>();

/**
 * Keeps `count` idle task hosts forked and connected to the store at
 * `socket`, so a task starts without waiting for a process (0 stops
 * keeping them). Idle spares do not keep the agent's process alive;
 * closeSpareHosts ends them.
 */
export function keepSpareHosts(socket: string, count: number): void {
  if (typeof socket !== 'string' || socket.length === 0) throw invalidParameter('socket', 'a socket path', socket);
  if (!Number.isSafeInteger(count) || count < 0 || count > 64)
    throw invalidParameter('count', 'an integer from 0 to 64', count);
  const s = spares.get(socket) ?? { want: 0, idle: [] };
  spares.set(socket, s);
  s.want = count;
  for (const c of s.idle.splice(count)) c.kill('SIGKILL');
  topUp(socket);
}

/** Pids of the idle spare hosts for `socket`. */
export function spareHostPids(socket: string): number[] {
  return (spares.get(socket)?.idle ?? []).map((c) => c.pid!);
}

/** Ends every idle spare host and stops keeping them; resolves once they have exited. */
export async function closeSpareHosts(): Promise<void> {
  const all = [...spares.values()].flatMap((s) => {
    s.want = 0;
    return s.idle.splice(0);
  });
  await Promise.all(
    all.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
}

function topUp(socket: string): void {
  const s = spares.get(socket);
  while (s && s.idle.length < s.want) {
    const c = forkHost(socket);
    // an idle spare must not keep the agent alive
    c.unref();
    c.channel?.unref();
    c.once('exit', () => {
      const i = s.idle.indexOf(c);
      if (i >= 0) s.idle.splice(i, 1);
    });
    s.idle.push(c);
  }
}

function takeHost(socket: string): ChildProcess {
  const s = spares.get(socket);
  const spare = s?.idle.shift();
  if (!spare) return forkHost(socket);
  spare.ref();
  spare.channel?.ref();
  topUp(socket);
  return spare;
}

function forkHost(socket: string): ChildProcess {
  return fork(builtScript('jobs/kinds/task-host-main.js'), [socket], {
    // The host runs built JavaScript; the agent's own flags (a test runner's loaders) are not for it.
    execArgv: [],
    serialization: 'advanced',
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
}

function supervise(child: ChildProcess, kind: JobKind, payload: TaskPayload, ctx: TaskContext): Promise<TaskOutput> {
  return new Promise((resolve, reject) => {
    let answer: { ok: true; output: TaskOutput } | { ok: false; error: TrellisError } | null = null;
    let aborted = false;
    let killedForCancel = false;
    let stderr = '';
    let timer: NodeJS.Timeout | null = null;

    const relayLines = (stream: NodeJS.ReadableStream | null, prefix: string) => {
      let buf = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (d: string) => {
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
      if (child.connected) child.send(m, (e) => e && undefined);
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

    child.on('message', (m: FromHost) => {
      switch (m.t) {
        case 'progress':
          if (!answer && !aborted) ctx.progress(m.progress);
          break;
        case 'log':
          ctx.log(m.line);
          break;
        case 'done':
        case 'err':
          if (answer) break;
          answer =
            m.t === 'done' ? { ok: true, output: m.output } : { ok: false, error: TrellisError.fromPayload(m.error) };
          if (!aborted) {
            timer = setTimeout(() => child.kill('SIGKILL'), EXIT_GRACE_MS);
          }
          break;
      }
    });
    child.once('error', (e) => {
      // fork failed (or a send did): the exit event follows when there was a process
      if (child.pid === undefined)
        finish(new TrellisError('ERR_WORKER_FAILED', `cannot start a task host: ${e.message}`));
    });
    child.once('exit', (code, signal) => {
      if (aborted) {
        finish(
          cancelled(
            ctx.signal.reason,
            killedForCancel
              ? `its task host did not stop within ${CANCEL_GRACE_MS} ms and was killed`
              : 'its task host stopped',
          ),
        );
      } else if (answer) {
        finish(answer.ok ? answer.output : answer.error);
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

    let settled = false;
    const finish = (result: TaskOutput | TrellisError) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      ctx.signal.removeEventListener('abort', onAbort);
      if (result instanceof TrellisError) reject(result);
      else resolve(result);
    };

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
