/**
 * The `trellis` command as an operator runs it: the store daemon's ready
 * line, socket permissions, status as JSON, a clean exit on SIGTERM, and a
 * refusal to start over a live store.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, findLogLine } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { errCode } from './helpers/child.js';
import { CLI, spawnStore, tempDir } from './helpers/store.js';

const run = promisify(execFile);

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

describe('trellis CLI', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });

  async function store(args: string[]) {
    const s = await spawnStore(args);
    cleanups.push(s.stop);
    return s;
  }

  it('store prints a ready line, makes its socket 0600, and status prints JSON', async () => {
    const s = await store(['--size', '64M', '--name', 'node-a']);
    expect(s.output()).toMatch(/\bready\b/);
    expect(statSync(s.socket).isSocket()).toBe(true);
    expect(statSync(s.socket).mode & 0o777).toBe(0o600);

    const { stdout } = await run(process.execPath, [CLI, 'status', '--socket', s.socket]);
    const status = JSON.parse(stdout);
    expect(status).toMatchObject({
      name: 'node-a',
      memoryLimit: 64 * 1024 * 1024,
      memoryUsed: 0,
      pid: s.child.pid,
      socket: s.socket,
    });
  });

  it('status over RPC with a token file; a wrong token is refused', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(async () => cleanup());
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'a-token-of-more-than-16-chars');
    const s = await store(['--size', '64M', '--name', 'node-r', '--rpc-port', '0', '--token-file', tokenFile]);
    const rpc = s.ready.rpc as string;
    expect(rpc).toMatch(/^127\.0\.0\.1:\d+$/);
    const { stdout } = await run(process.execPath, [CLI, 'status', '--rpc', rpc!, '--token-file', tokenFile]);
    expect(JSON.parse(stdout)).toMatchObject({ name: 'node-r', rpc: { host: '127.0.0.1' } });
    const inst = await run(process.execPath, [CLI, 'status', '--rpc', rpc!, '--token-file', tokenFile, '--instances']);
    expect(JSON.parse(inst.stdout)).toEqual([expect.objectContaining({ name: 'node-r', rpc: expect.any(Object) })]);
    writeFileSync(tokenFile, 'another-token-of-16-chars-or-more');
    const bad = await run(process.execPath, [CLI, 'status', '--rpc', rpc!, '--token-file', tokenFile]).catch((e) => e);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/ERR_UNAUTHORIZED/);
    const both = await run(process.execPath, [CLI, 'status']).catch((e) => e);
    expect(both.stderr).toMatch(/ERR_BAD_REQUEST: give exactly one of --socket and --rpc/);
  });

  it('--socket-mode 0660 gives a 0660 socket', async () => {
    const s = await store(['--size', '64M', '--socket-mode', '0660']);
    expect(statSync(s.socket).mode & 0o777).toBe(0o660);
  });

  it('SIGTERM makes the store exit 0 and remove its socket; connected clients see ERR_DISCONNECTED', async () => {
    const s = await store(['--size', '64M']);
    const c = await connect({ socket: s.socket });
    cleanups.push(() => c.close());
    const id = await c.put(new Uint8Array([1, 2, 3]));
    const pending = errCode(c.getName('never', { wait: true }));
    expect(await s.stop()).toBe(0);
    expect(existsSync(s.socket)).toBe(false);
    expect(['ERR_DISCONNECTED', 'ERR_SHUTTING_DOWN']).toContain(await pending);
    expect(await errCode(c.get(id))).toBe('ERR_DISCONNECTED');
  });

  it('a second store on the same socket refuses to start and the first keeps serving', async () => {
    const s = await store(['--size', '64M']);
    const second = spawn(process.execPath, [CLI, 'store', '--socket', s.socket, '--size', '64M'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    second.stdout!.on('data', (d) => (out += d));
    second.stderr!.on('data', (d) => (out += d));
    cleanups.push(async () => {
      if (second.exitCode === null && second.signalCode === null) second.kill('SIGKILL');
      await exitOf(second);
    });
    const exit = await exitOf(second);
    expect(exit.code).toBe(1);
    expect(out).toMatch(/ERR_OBJECT_EXISTS/);
    expect(findLogLine(out, 'ready')).toBeUndefined();

    expect(existsSync(s.socket)).toBe(true);
    await using c = await connect({ socket: s.socket });
    expect((await c.status()).pid).toBe(s.child.pid);
  });

  it('a stale socket file left by a killed store is replaced', async () => {
    const first = await store(['--size', '64M']);
    first.child.kill('SIGKILL');
    await exitOf(first.child);
    expect(existsSync(first.socket)).toBe(true); // nobody cleaned up after a kill -9

    const again = spawn(process.execPath, [CLI, 'store', '--socket', first.socket, '--size', '64M'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(async () => {
      if (again.exitCode === null && again.signalCode === null) again.kill('SIGTERM');
      await exitOf(again);
    });
    let out = '';
    again.stderr!.on('data', (d) => (out += d));
    await new Promise<void>((resolve, reject) => {
      again.stdout!.on('data', (d) => {
        out += d;
        if (findLogLine(out, 'ready')) resolve();
      });
      again.once('exit', (code) => reject(new Error(`store exited ${code}: ${out}`)));
    });
    await using c = await connect({ socket: first.socket });
    expect((await c.status()).pid).toBe(again.pid);
  });

  it('bad arguments are refused with a message', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(async () => cleanup());
    const socket = join(dir, 's.sock');
    const r = await run(process.execPath, [CLI, 'store', '--socket', socket, '--size', 'lots']).catch((e) => e);
    expect(r.code).not.toBe(0);
    expect(String(r.stderr)).toMatch(/size/i);
    expect(existsSync(socket)).toBe(false);
    const st = await run(process.execPath, [CLI, 'status', '--socket', socket]).catch((e) => e);
    expect(st.code).toBe(1);
    expect(String(st.stderr)).toMatch(/ERR_DISCONNECTED/);
  });
});
