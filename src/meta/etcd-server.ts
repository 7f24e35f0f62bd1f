/**
 * An etcd child on free ports with its own temporary data directory,
 * stopped by pid (Debian package etcd-server, binary `etcd`). The one etcd
 * starter of the project: the cluster tests and the benchmarks use it, as
 * they use src/jobs/redis-server.ts for Redis. `restart()` kills it and
 * starts it again on the same ports, keeping its data or (fresh) starting
 * from an empty data dir.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrellisError } from '../errors.js';
import { freePort } from '../free-port.js';

export interface EtcdServerHandle {
  /** HOST:PORT of the client endpoint. */
  readonly endpoint: string;
  /** etcd://HOST:PORT, as `--meta` takes it. */
  readonly url: string;
  pid(): number;
  restart(opts?: { fresh?: boolean; downMs?: number }): Promise<void>;
  /** Stops it by pid and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startEtcdServer(opts: { bin?: string } = {}): Promise<EtcdServerHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const dataDir = join(dir, 'data');
  let proc: ChildProcess | null = null;
  let log = '';

  const launch = async () => {
    const p = spawn(
      opts.bin ?? 'etcd',
      [
        '--name',
        'trellis',
        '--data-dir',
        dataDir,
        '--listen-client-urls',
        `http://127.0.0.1:${clientPort}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${clientPort}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${peerPort}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peerPort}`,
        '--initial-cluster',
        `trellis=http://127.0.0.1:${peerPort}`,
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    p.stderr!.on('data', (d) => (log += d));
    proc = p;
    const spawnError = new Promise<never>((_, reject) =>
      p.once('error', (e) => reject(new TrellisError('ERR_UNSUPPORTED', `cannot run etcd: ${e.message}`))),
    );
    const deadline = Date.now() + 20_000;
    const ready = (async () => {
      while (!(await canConnect(clientPort))) {
        if (p.exitCode !== null) throw new TrellisError('ERR_META_UNAVAILABLE', `etcd exited: ${log}`);
        if (Date.now() > deadline) throw new TrellisError('ERR_TIMEOUT', `etcd did not start within 20 s: ${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await Promise.race([ready, spawnError]);
  };

  const kill = async () => {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  };

  try {
    await launch();
  } catch (e) {
    await kill();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    endpoint: `127.0.0.1:${clientPort}`,
    url: `etcd://127.0.0.1:${clientPort}`,
    pid: () => proc?.pid ?? -1,
    restart: async (o = {}) => {
      await kill();
      if (o.fresh) rmSync(dataDir, { recursive: true, force: true });
      if (o.downMs) await new Promise((r) => setTimeout(r, o.downMs));
      await launch();
    },
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
