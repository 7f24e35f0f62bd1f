/**
 * A real TaskContext for calling job-kind runners directly, as the agent
 * does: a client of a real store, an AbortController, and progress and log
 * recorded in order.
 */
import { readFileSync } from 'node:fs';
import type { StoreClient } from '../../dist/src/client/store-client.js';
import type { JobProgress } from '../../dist/src/jobs/job-types.js';
import type { TaskContext } from '../../dist/src/jobs/task-types.js';

export const HANDLERS = new URL('../fixtures/handlers', import.meta.url).pathname;

export interface RecordedContext {
  ctx: TaskContext;
  abort: AbortController;
  progress: JobProgress[];
  logs: string[];
  /** Resolves at the first log line or progress report that `match` accepts. */
  waitFor(match: (e: { log?: string; progress?: JobProgress }) => boolean): Promise<void>;
}

export function taskContext(
  client: StoreClient,
  socket: string,
  localShards: string[],
  handlerDirs: string[] = [HANDLERS],
): RecordedContext {
  const abort = new AbortController();
  const progress: JobProgress[] = [];
  const logs: string[] = [];
  const waiters: { match: (e: { log?: string; progress?: JobProgress }) => boolean; resolve: () => void }[] = [];
  const notify = (e: { log?: string; progress?: JobProgress }) => {
    for (const w of waiters.splice(0)) {
      if (w.match(e)) w.resolve();
      else waiters.push(w);
    }
  };
  const ctx: TaskContext = {
    client,
    node: 'test-node',
    socket,
    localShards,
    signal: abort.signal,
    progress: (p) => {
      progress.push(p);
      notify({ progress: p });
    },
    log: (line) => {
      logs.push(line);
      notify({ log: line });
    },
    handlerDirs,
  };
  return {
    ctx,
    abort,
    progress,
    logs,
    waitFor: (match) => {
      if (logs.some((log) => match({ log })) || progress.some((p) => match({ progress: p }))) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}

/** What a promise rejects with, as { code, message }. */
export async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    const { code, message } = e as { code: string; message: string };
    return { code, message };
  }
  throw new Error('expected a rejection');
}

/** A process exists and is not a zombie (an orphan killed in a container may wait a while to be reaped). */
export function processRunning(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== undefined && state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
