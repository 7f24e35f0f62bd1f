/**
 * The attaching handshake (issue 12, cold start): a hello with `attach` is
 * answered with the fds a first get needs, so a fresh process's first get of
 * a published tensor makes no other request; its answer is checked like any
 * reply; and a store that goes away or never answers mid-handshake gives a
 * typed error, whether connect blocks its thread (a store in another
 * process) or waits on a worker (a store in this thread).
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect } from 'trellis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { checkAttached } from '../dist/src/client/handshake.js';
import { errCode } from './helpers/child.js';
import { runChild, startStore, tempDir } from './helpers/store.js';

const MIB = 1024 * 1024;

/** A fake store's answer text to the hello with request id 1, with its session fields. */
function helloAnswer(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    t: 'ok',
    rid: 1,
    version: 1,
    instanceId: 1,
    storeId: 's',
    name: '',
    token: 'k',
    maxFrame: 1 << 24,
    inlineLimit: 1024,
    session: 1,
    segments: 1,
    ...extra,
  });
}

async function codeOf(f: () => unknown): Promise<string> {
  return errCode(async () => f());
}

describe('the attaching hello answer is checked', () => {
  const raw = (header: string, fds: number[] = []) => ({ socket: -1, header, fds });

  it('splits the fds as the answer describes them', () => {
    const attached = { segments: [{ id: 0, size: MIB }], fastpath: { directory: 4096, pins: 4096 } };
    const a = checkAttached(raw(helloAnswer({ attached }), [10, 11, 12]));
    expect({ segmentFds: a.segmentFds, fastFds: a.fastFds, attached: a.hello.attached }).toEqual({
      segmentFds: [10],
      fastFds: [11, 12],
      attached,
    });
    expect(checkAttached(raw(helloAnswer())).segmentFds).toEqual([]);
  });

  it('a malformed answer is ERR_PROTOCOL; an error answer is the store error', async () => {
    const seg = { segments: [{ id: 0, size: MIB }] };
    const cases = {
      notJson: raw('{"t":"ok",'),
      array: raw('[1]'),
      nullHeader: raw('null'),
      otherRid: raw(helloAnswer({ rid: 2 })),
      noSession: raw(JSON.stringify({ t: 'ok', rid: 1, version: 1 })),
      fdsWithoutAttached: raw(helloAnswer(), [10]),
      fewerFds: raw(helloAnswer({ attached: seg }), []),
      moreFds: raw(helloAnswer({ attached: seg }), [10, 11]),
      attachedNotObject: raw(helloAnswer({ attached: [1] }), []),
      badSegment: raw(helloAnswer({ attached: { segments: [{ id: -1, size: MIB }] } }), [10]),
      tooManySegments: raw(
        helloAnswer({ attached: { segments: Array.from({ length: 65 }, (_, id) => ({ id, size: MIB })) } }),
        Array.from({ length: 65 }, (_, i) => 10 + i),
      ),
      refused: raw(JSON.stringify({ t: 'err', rid: 1, code: 'ERR_PROTOCOL', message: 'protocol version 9' })),
      refusedUnauthorized: raw(JSON.stringify({ t: 'err', rid: 0, code: 'ERR_UNAUTHORIZED', message: 'no' })),
    };
    const codes: Record<string, string> = {};
    for (const [k, v] of Object.entries(cases)) codes[k] = await codeOf(() => checkAttached(v));
    expect(codes).toEqual({
      notJson: 'ERR_PROTOCOL',
      array: 'ERR_PROTOCOL',
      nullHeader: 'ERR_PROTOCOL',
      otherRid: 'ERR_PROTOCOL',
      noSession: 'ERR_PROTOCOL',
      fdsWithoutAttached: 'ERR_PROTOCOL',
      fewerFds: 'ERR_PROTOCOL',
      moreFds: 'ERR_PROTOCOL',
      attachedNotObject: 'ERR_PROTOCOL',
      badSegment: 'ERR_PROTOCOL',
      tooManySegments: 'ERR_PROTOCOL',
      refused: 'ERR_PROTOCOL',
      refusedUnauthorized: 'ERR_UNAUTHORIZED',
    });
  });
});

describe('a fresh process attaches', () => {
  let stop: (() => Promise<void>) | null = null;
  afterEach(async () => {
    await stop?.();
    stop = null;
  });

  it('and reads a published tensor right with no request after the hello', async () => {
    const env = await startStore({ size: 64 * MIB });
    stop = env.stop;
    await using c = await connect({ socket: env.socket });
    const n = 4 * MIB;
    const w = await c.createTensor('uint32', [n]);
    for (let i = 0; i < n; i++) w.data[i] = Math.imul(i, 2654435761) >>> 0;
    const id = await w.seal();
    const before = (await c.status()).counters;
    const r = await runChild(
      `
      const c = await connect({ socket: ${JSON.stringify(env.socket)} });
      // The fast path is up when connect returns: nothing left to wait for.
      const up = await Promise.race([c.fastPath, new Promise((r) => setImmediate(() => r('later')))]);
      const t = await c.get(${JSON.stringify(id)});
      let bad = -1;
      for (let i = 0; i < t.data.length; i++) if (t.data[i] !== Math.imul(i, 2654435761) >>> 0) { bad = i; break; }
      console.log(JSON.stringify({ up, dtype: t.dtype, shape: t.shape, bad, readOnly: trellis.TrellisClient.isReadOnlyView(t.data) }));
      await c.close();
      `,
    );
    expect({ code: r.code, json: r.json, stderr: r.stderr }).toEqual({
      code: 0,
      json: { up: true, dtype: 'uint32', shape: [n], bad: -1, readOnly: true },
      stderr: '',
    });
    const after = (await c.status()).counters;
    // One fast get, and no get through the socket: the hello brought everything.
    expect({ fast: after.fastGets - before.fastGets, socket: after.gets - before.gets }).toEqual({
      fast: 1,
      socket: 0,
    });
  });
});

describe('a handshake that does not finish', () => {
  const { dir, cleanup } = tempDir();
  const servers: Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });
  afterAll(cleanup);

  /** A fake store in this thread doing `onHello` with each connection once it has sent something. */
  async function fake(name: string, onHello: (sock: Socket) => void): Promise<string> {
    const path = join(dir, name);
    const server = createServer((sock) => sock.once('data', () => onHello(sock)));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return path;
  }

  /** A fake store in a child process that reads the hello, then exits, stays silent, or answers a broken frame. */
  async function fakeChild(name: string, mode: 'exit' | 'silent' | 'garbage'): Promise<() => void> {
    const path = join(dir, name);
    const code = `
      const net = require('node:net');
      const server = net.createServer((s) => s.once('data', () => {
        if (${JSON.stringify(mode)} === 'exit') process.exit(0);
        if (${JSON.stringify(mode)} === 'garbage') s.write(Buffer.from([3, 0, 0, 0, 1, 2, 3]));
      }));
      server.listen(${JSON.stringify(path)}, () => console.log('listening'));
    `;
    const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    return () => child.kill('SIGKILL');
  }

  it('a store in another process that dies, stays silent or answers garbage mid-handshake (blocking path): typed errors', async () => {
    const cases = [
      ['exit', 'ERR_DISCONNECTED'],
      ['silent', 'ERR_TIMEOUT'],
      ['garbage', 'ERR_PROTOCOL'],
    ] as const;
    const got: string[] = [];
    for (const [mode] of cases) {
      const kill = await fakeChild(`${mode}.sock`, mode);
      try {
        // Only the silent one is waited out; the others answer (or die) in their own time.
        const timeoutMs = mode === 'silent' ? 300 : 20_000;
        got.push(await errCode(connect({ socket: join(dir, `${mode}.sock`), timeoutMs })));
      } finally {
        kill();
      }
    }
    expect(got).toEqual(cases.map(([, code]) => code));
  });

  it('a store in this thread that drops the connection or stays silent (worker path): typed errors', async () => {
    const drops = await fake('drops.sock', (s) => s.destroy());
    const silent = await fake('quiet.sock', () => {});
    expect([
      await errCode(connect({ socket: drops })),
      await errCode(connect({ socket: silent, timeoutMs: 300 })),
      await errCode(connect({ socket: join(dir, 'nobody.sock') })),
      await errCode(connect({ socket: silent, timeoutMs: -1 })),
    ]).toEqual(['ERR_DISCONNECTED', 'ERR_TIMEOUT', 'ERR_DISCONNECTED', 'ERR_BAD_REQUEST']);
  });

  it('leaves no fd behind after failed handshakes', async () => {
    const drops = await fake('drops2.sock', (s) => s.destroy());
    const before = readdirSync('/proc/self/fd').length;
    for (let i = 0; i < 20; i++) await errCode(connect({ socket: drops }));
    // Sockets the server side closed may linger a tick in this process; ours must not.
    await new Promise((r) => setTimeout(r, 50));
    expect(readdirSync('/proc/self/fd').length - before).toBeLessThanOrEqual(0);
  });
});
