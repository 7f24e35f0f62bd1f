/**
 * A redis-server child on a free port with its own temporary directory,
 * configured as production wants it (`--appendonly yes`, `--maxmemory-policy
 * noeviction`), stopped by pid. The one Redis starter of the project: the
 * demo, the tests and the benchmarks all use it (benchmarks turn AOF off).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrellisError } from '../errors.js';
import { freePort } from '../free-port.js';

export interface RedisServerOptions {
  host?: string;
  /** Default: a free port. */
  port?: number;
  /** Append-only file (default true). */
  appendonly?: boolean;
  /** 'always' makes a kill -9 lose nothing (tests); production's default is 'everysec'. */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** The binary (default `redis-server` on PATH, Debian package redis-server). */
  bin?: string;
}

export interface RedisServerHandle {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** The data directory (AOF lives here), removed by stop(). */
  readonly dir: string;
  pid(): number;
  /** Kills the server (SIGKILL: a crash) and starts it again on the same port and data. */
  restart(opts?: { downMs?: number }): Promise<void>;
  /** Stops it by pid and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

export async function startRedisServer(opts: RedisServerOptions = {}): Promise<RedisServerHandle> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? (await freePort(host));
  const dir = mkdtempSync(join(tmpdir(), 'trellis-redis-'));
  const args = [
    '--port',
    String(port),
    '--bind',
    host,
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    opts.appendonly === false ? 'no' : 'yes',
    '--appendfsync',
    opts.appendfsync ?? 'everysec',
    '--maxmemory-policy',
    'noeviction',
  ];
  let proc: ChildProcess | null = null;

  const launch = () =>
    new Promise<void>((resolve, reject) => {
      const p = spawn(opts.bin ?? 'redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      proc = p;
      let out = '';
      const t = setTimeout(() => fail(`redis-server did not start within 20 s: ${out}`), 20_000);
      const fail = (why: string) => {
        clearTimeout(t);
        p.kill('SIGKILL');
        reject(new TrellisError('ERR_UNSUPPORTED', why));
      };
      p.once('error', (e) => fail(`cannot run redis-server (${e.message}); install the Debian package redis-server`));
      p.once('exit', (code, sig) => fail(`redis-server exited (${code ?? sig}): ${out}`));
      const onData = (d: Buffer) => {
        out += d;
        if (out.includes('Ready to accept connections')) {
          clearTimeout(t);
          p.removeAllListeners('exit');
          p.stdout!.off('data', onData);
          p.stdout!.resume();
          p.stderr!.resume();
          resolve();
        }
      };
      p.stdout!.on('data', onData);
      p.stderr!.on('data', (d) => (out += d));
    });

  const kill = async (signal: NodeJS.Signals) => {
    const p = proc as ChildProcess | null;
    proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      process.kill(p.pid!, signal);
    });
  };

  await launch();
  let stopping: Promise<void> | undefined;
  return {
    url: `redis://${host}:${port}`,
    host,
    port,
    dir,
    pid: () => (proc as ChildProcess | null)?.pid ?? -1,
    restart: async (o = {}) => {
      await kill('SIGKILL');
      if (o.downMs) await new Promise((r) => setTimeout(r, o.downMs));
      await launch();
    },
    stop: () => {
      stopping ??= kill('SIGTERM').then(() => rmSync(dir, { recursive: true, force: true }));
      return stopping;
    },
  };
}
