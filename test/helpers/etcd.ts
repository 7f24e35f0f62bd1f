/**
 * A real etcd for tests: started on free ports with a temporary data dir,
 * stopped by pid. `restart()` stops it and starts it again on the same ports,
 * keeping its data or (fresh) starting from an empty data dir.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { tempDir } from './store.js';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
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

export interface EtcdHandle {
  endpoint: string;
  url: string;
  pid(): number;
  restart(opts?: { fresh?: boolean; downMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

export async function startEtcd(): Promise<EtcdHandle> {
  const { dir, cleanup } = tempDir('trellis-etcd-');
  const clientPort = await freePort();
  const peerPort = await freePort();
  const dataDir = join(dir, 'data');
  let proc: ChildProcess | null = null;
  let log = '';

  const launch = async () => {
    const p = spawn(
      'etcd',
      [
        '--name',
        'trellis-test',
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
        `trellis-test=http://127.0.0.1:${peerPort}`,
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    p.stderr!.on('data', (d) => (log += d));
    proc = p;
    const deadline = Date.now() + 20_000;
    while (!(await canConnect(clientPort))) {
      if (p.exitCode !== null) throw new Error(`etcd exited: ${log}`);
      if (Date.now() > deadline) throw new Error(`etcd did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
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

  await launch();
  return {
    endpoint: `127.0.0.1:${clientPort}`,
    url: `etcd://127.0.0.1:${clientPort}`,
    pid: () => proc?.pid ?? -1,
    restart: async (opts = {}) => {
      await kill();
      if (opts.fresh) rmSync(dataDir, { recursive: true, force: true });
      if (opts.downMs) await new Promise((r) => setTimeout(r, opts.downMs));
      await launch();
    },
    stop: async () => {
      await kill();
      cleanup();
    },
  };
}
