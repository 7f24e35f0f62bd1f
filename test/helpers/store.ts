/**
 * Test helpers: a fresh socket path per test, an in-process store, a store in
 * a child process, and node child scripts that talk to a store.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findLogLine, type LogLine } from 'trellis';
import { type StoreOptions, StoreServer } from 'trellis/store';

export const ROOT = new URL('../..', import.meta.url).pathname;
export const CLI = join(ROOT, 'bin/trellis.js');
export const DIST = join(ROOT, 'dist/src/index.js');

export function tempDir(prefix = 'trellis-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function startStore(opts: Partial<StoreOptions> = {}): Promise<{
  store: StoreServer;
  socket: string;
  dir: string;
  stop: () => Promise<void>;
}> {
  const { dir, cleanup } = tempDir();
  const socket = join(dir, 'store.sock');
  const store = await StoreServer.start({ socket, size: 256 * 1024 * 1024, ...opts });
  return {
    store,
    socket,
    dir,
    stop: async () => {
      await store.close();
      cleanup();
    },
  };
}

/** Runs `trellis store` as a child process and waits for its ready line. */
export async function spawnStore(args: string[]): Promise<{
  child: ChildProcess;
  socket: string;
  dir: string;
  output: () => string;
  /** The fields of its ready line: socket, size, instance, rpc ('host:port' when serving RPC), metrics (a URL). */
  ready: LogLine;
  stop: () => Promise<number | null>;
}> {
  const { dir, cleanup } = tempDir();
  const socket = join(dir, 'store.sock');
  const child = spawn(process.execPath, [CLI, 'store', '--socket', socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = await untilReady(child, 'store');
  return {
    child,
    socket,
    dir,
    output,
    ready: findLogLine(output(), 'ready')!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        // Already gone (exited, or killed by a test): exitCode is null after a signal.
        cleanup();
        return child.exitCode;
      }
      const code = await new Promise<number | null>((resolve) => {
        child.once('exit', (c) => resolve(c));
        child.kill('SIGTERM');
      });
      cleanup();
      return code;
    },
  };
}

/**
 * Collects a `trellis` child's stdout and stderr and waits for its JSON log
 * line with msg `ready` (or `msg`) on stdout; resolves with a reader of
 * everything it printed.
 */
export async function untilReady(child: ChildProcess, what: string, msg = 'ready'): Promise<() => string> {
  let out = '';
  let stdout = '';
  child.stdout!.on('data', (d) => {
    out += d;
    stdout += d;
  });
  child.stderr!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${out}`)), 20_000);
    child.stdout!.on('data', () => {
      if (findLogLine(stdout, msg)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${what} exited with ${code}: ${out}`));
    });
  });
  return () => out;
}

/** The arguments of a cluster store: etcd metadata under `metaPrefix`, RPC on `host` with the token in `tokenFile`. */
export function clusterStoreArgs(o: {
  name: string;
  size: string;
  etcdUrl: string;
  metaPrefix: string;
  host: string;
  tokenFile: string;
}): string[] {
  return [
    '--size',
    o.size,
    '--name',
    o.name,
    '--meta',
    o.etcdUrl,
    '--meta-prefix',
    o.metaPrefix,
    '--rpc-host',
    o.host,
    '--rpc-port',
    '0',
    '--token-file',
    o.tokenFile,
  ];
}

/**
 * Runs an ES module snippet in a child node process with `connect` and friends
 * imported from the built package; resolves with its stdout parsed as JSON
 * (the snippet prints one JSON line) and its exit code / signal.
 */
export function runChild(
  code: string,
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; json: unknown }> {
  const prelude = `import * as trellis from ${JSON.stringify(DIST)};\nconst { connect, TrellisError } = trellis;\n`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', prelude + code], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child timed out; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('exit', (c, s) => {
      clearTimeout(t);
      let json: unknown;
      const last = stdout.trim().split('\n').pop();
      try {
        json = last ? JSON.parse(last) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code: c, signal: s, stdout, stderr, json });
    });
  });
}
