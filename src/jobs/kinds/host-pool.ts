/**
 * Where task hosts come from: a host kept warm for the same job, a spare
 * forked ahead of time, or a new fork, in that order.
 *
 * - Spares (keepSpareHosts): idle hosts forked and connected to the node's
 *   store before any task needs them. Forking, loading the client and
 *   connecting take ~0.3 s here; a task that finds a spare starts in a few
 *   milliseconds. A spare taken is replaced at once.
 * - Warm hosts: a host whose task succeeded may run the next task of the
 *   same job (never another job's: jobs share nothing), as a warm Lambda
 *   does — its handler module is loaded and its client connected, so a
 *   many-task map job pays for one process per concurrent task, not per
 *   task. It waits WARM_IDLE_MS for one and exits; after MAX_TASKS_PER_HOST
 *   tasks it is retired. A host whose task failed or was cancelled is never
 *   reused.
 *
 * Idle hosts do not keep the agent's process alive; closeSpareHosts ends
 * them all. Parked hosts and spares are children of this process: if it
 * dies, each notices (see task-host-main.ts) and exits.
 */
import { type ChildProcess, fork } from 'node:child_process';
import type { Socket } from 'node:net';
import { invalidParameter } from '../../errors.js';
import { builtScript } from '../../package-root.js';
import type { ToHost } from './host-messages.js';

/** How long a host that finished a task waits for the next task of its job. */
export const WARM_IDLE_MS = 2_000;
/** Tasks a host runs at most, so what a handler leaks stays bounded. */
export const MAX_TASKS_PER_HOST = 100;

export interface Host {
  child: ChildProcess;
  /** Tasks this host has been given, this one included. */
  tasks: number;
}

/** Idle spare hosts per store socket, and how many each should have. */
const spares = new Map<string, { want: number; idle: ChildProcess[] }>();
/** Hosts waiting for the next task of their job, by socket and job id. */
const warm = new Map<string, { host: Host; timer: NodeJS.Timeout; drop: () => void }[]>();

/** A host for the next task of `jobId` on the store at `socket`. */
export function takeHost(socket: string, jobId: string): Host {
  const key = warmKey(socket, jobId);
  const parked = warm.get(key)?.shift();
  if (parked) {
    if (warm.get(key)?.length === 0) warm.delete(key);
    clearTimeout(parked.timer);
    parked.host.child.off('exit', parked.drop);
    use(parked.host.child);
    parked.host.tasks++;
    return parked.host;
  }
  const s = spares.get(socket);
  const spare = s?.idle.shift();
  if (spare) {
    use(spare);
    topUp(socket);
    return { child: spare, tasks: 1 };
  }
  return { child: forkHost(socket), tasks: 1 };
}

/**
 * After a task succeeded: keeps the host for the next task of the job, or
 * tells it to exit (it has run its share). The caller has detached its own
 * listeners.
 */
export function releaseHost(socket: string, jobId: string, host: Host): void {
  const c = host.child;
  if (c.exitCode !== null || c.signalCode !== null || !c.connected) return;
  if (host.tasks >= MAX_TASKS_PER_HOST) {
    retire(c);
    return;
  }
  const key = warmKey(socket, jobId);
  const list = warm.get(key) ?? [];
  warm.set(key, list);
  const drop = () => {
    const i = list.indexOf(entry);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0 && warm.get(key) === list) warm.delete(key);
  };
  const timer = setTimeout(() => {
    drop();
    c.off('exit', drop);
    retire(c);
  }, WARM_IDLE_MS);
  timer.unref();
  const entry = { host, timer, drop };
  c.once('exit', drop);
  idle(c);
  list.push(entry);
}

/**
 * Keeps `count` idle task hosts forked and connected to the store at
 * `socket`, so a task starts without waiting for a process (0 stops
 * keeping them).
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

/** Pids of the hosts waiting for another task of `jobId`. */
export function warmHostPids(socket: string, jobId: string): number[] {
  return (warm.get(warmKey(socket, jobId)) ?? []).map((e) => e.host.child.pid!);
}

/** Ends every idle host (spares and warm ones) and stops keeping spares; resolves once they have exited. */
export async function closeSpareHosts(): Promise<void> {
  const all = [...spares.values()].flatMap((s) => {
    s.want = 0;
    return s.idle.splice(0);
  });
  for (const list of warm.values()) {
    for (const e of list.splice(0)) {
      clearTimeout(e.timer);
      all.push(e.host.child);
    }
  }
  warm.clear();
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
    idle(c);
    c.once('exit', () => {
      const i = s.idle.indexOf(c);
      if (i >= 0) s.idle.splice(i, 1);
    });
    s.idle.push(c);
  }
}

function forkHost(socket: string): ChildProcess {
  // the agent's pid: a host that boots after its agent died must see that it has none
  return fork(builtScript('jobs/kinds/task-host-main.js'), [socket, String(process.pid)], {
    // The host runs built JavaScript; the agent's own flags (a test runner's loaders) are not for it.
    execArgv: [],
    serialization: 'advanced',
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
}

/** An idle host must not keep the agent alive: neither the process, its IPC channel nor its stdio pipes. */
function idle(c: ChildProcess): void {
  c.unref();
  c.channel?.unref();
  (c.stdout as Socket | null)?.unref();
  (c.stderr as Socket | null)?.unref();
}

function use(c: ChildProcess): void {
  c.ref();
  c.channel?.ref();
  (c.stdout as Socket | null)?.ref();
  (c.stderr as Socket | null)?.ref();
}

function retire(c: ChildProcess): void {
  if (c.connected) c.send({ t: 'exit' } satisfies ToHost, () => {});
  const kill = setTimeout(() => c.kill('SIGKILL'), WARM_IDLE_MS);
  kill.unref();
  c.once('exit', () => clearTimeout(kill));
}

function warmKey(socket: string, jobId: string): string {
  return `${socket}\u0000${jobId}`;
}
