/**
 * Long-lived child node processes that talk to a store through the built
 * package (dist/). A child prints one JSON object per line with `send(obj)`;
 * the test reads them in order with `next()`. The test may write lines to the
 * child's stdin; the child reads them with `await command()` (a child that
 * has called it stays alive reading stdin until it exits on its own).
 *
 * Every child started here is tracked; `killChildren()` (call it in afterEach)
 * SIGKILLs the ones still running and waits for them, so no test leaks a process.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { DIST } from './store.js';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ChildHandle {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** The next JSON line the child prints; rejects if the child exits first or after timeoutMs. */
  next(timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends one line to the child's `command()`. */
  tell(line: string): void;
  readonly exited: Promise<ChildExit>;
  stderr(): string;
}

const live = new Set<ChildProcess>();

const PRELUDE = `
import * as trellisRoot from ${JSON.stringify(DIST)};
import * as trellisStore from ${JSON.stringify(DIST.replace(/index\.js$/, 'store/index.js'))};
import { createInterface } from 'node:readline';
const trellis = { ...trellisRoot, ...trellisStore };
const { connect, TrellisError } = trellis;
const send = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let lines;
const command = async () => {
  lines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return (await lines.next()).value;
};
const errCode = async (p) => { try { await p; return 'no error'; } catch (e) { return e?.code ?? String(e); } };
`;

export function startChild(code: string, env: Record<string, string> = {}): ChildHandle {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', PRELUDE + code], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(proc);
  let err = '';
  let buf = '';
  const queue: Record<string, unknown>[] = [];
  const waiting: { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  let done: ChildExit | null = null;
  proc.stderr!.on('data', (d) => (err += d));
  proc.stdout!.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line);
      } catch {
        msg = { unparsed: line };
      }
      const w = waiting.shift();
      if (w) w.resolve(msg);
      else queue.push(msg);
    }
  });
  proc.stdin!.on('error', () => {});
  const exited = new Promise<ChildExit>((resolve) => {
    proc.once('exit', (c, s) => {
      live.delete(proc);
      done = { code: c, signal: s };
      for (const w of waiting.splice(0))
        w.reject(new Error(`child exited (${c ?? s}) before answering; stderr: ${err}`));
      resolve(done);
    });
  });
  return {
    proc,
    pid: proc.pid!,
    exited,
    stderr: () => err,
    tell: (line) => {
      proc.stdin!.write(`${line}\n`);
    },
    next: (timeoutMs = 30_000) => {
      const q = queue.shift();
      if (q) return Promise.resolve(q);
      if (done) return Promise.reject(new Error(`child exited (${done.code ?? done.signal}); stderr: ${err}`));
      return new Promise((resolve, reject) => {
        const entry = {
          resolve: (v: Record<string, unknown>) => {
            clearTimeout(t);
            resolve(v);
          },
          reject: (e: Error) => {
            clearTimeout(t);
            reject(e);
          },
        };
        const t = setTimeout(() => {
          waiting.splice(waiting.indexOf(entry), 1);
          reject(new Error(`child printed nothing within ${timeoutMs} ms; stderr: ${err}`));
        }, timeoutMs);
        waiting.push(entry);
      });
    },
  };
}

/** SIGKILLs every child still running and waits until each has exited. */
export async function killChildren(): Promise<void> {
  await Promise.all(
    [...live].map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.exitCode !== null || p.signalCode !== null) {
            live.delete(p);
            resolve();
            return;
          }
          p.once('exit', () => resolve());
          p.kill('SIGKILL');
        }),
    ),
  );
}

/** Polls `check` until it returns a truthy value, for state that settles asynchronously (not a speed check). */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen; last: ${String(last)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The code a promise rejects with, or 'no error'. */
export async function errCode(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'no error';
  } catch (e) {
    return (e as { code?: string })?.code ?? String(e);
  }
}

/** 'CODE: message' of what the promise rejected with, or 'no error'. */
export async function errText(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'no error';
  } catch (e) {
    return `${(e as { code?: string })?.code}: ${(e as Error)?.message}`;
  }
}
