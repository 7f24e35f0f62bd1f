/**
 * The client side of the protocol: what a client says about its transport,
 * which views it reports as the store's read-only memory, and that it checks
 * every answer (a store that answers with the wrong shapes is ERR_PROTOCOL,
 * not a value that breaks later).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Tensor, TrellisClient } from '../dist/src/index.js';
import { encodeFrame, FrameDecoder } from '../dist/src/protocol/frame.js';
import { errCode } from './helpers/child.js';
import { type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';

describe('client transport and read-only views', () => {
  let s: RpcStore;
  beforeAll(async () => {
    s = await startRpcStore('127.0.0.1');
  });
  afterAll(async () => {
    await s.stop();
  });

  it('each client names its transport', async () => {
    await using ipc = await connect({ socket: s.socket });
    await using rpc = await connect({ rpc: s.rpc, token: TOKEN });
    expect([ipc.transport, rpc.transport]).toEqual(['ipc', 'rpc']);
  });

  it('isReadOnlyView is true for what an IPC get hands out, false for writable and copied memory', async () => {
    await using ipc = await connect({ socket: s.socket });
    await using rpc = await connect({ rpc: s.rpc, token: TOKEN });
    const plain = Float32Array.from([1, 2, 3]);
    const id = await ipc.put(plain);
    const view = (await ipc.get(id)) as Tensor;
    const copy = (await rpc.get(id)) as Tensor;
    const w = await ipc.createTensor('float32', [3]);
    expect([
      TrellisClient.isReadOnlyView(view.data),
      TrellisClient.isReadOnlyView(view.data.buffer),
      TrellisClient.isReadOnlyView(plain),
      TrellisClient.isReadOnlyView(copy.data),
      TrellisClient.isReadOnlyView(w.data),
    ]).toEqual([true, true, false, false, false]);
    await w.abort();
    await ipc.release(id);
    await rpc.release(id);
  });
});

describe('replies are checked', () => {
  let dir: string;
  let server: Server;
  let path: string;
  /** What the fake store answers to each request type after the hello (fields of the ok answer). */
  const answers: Record<string, Record<string, unknown>> = {
    list: { objects: [{ id: 'o0000000000000001', typename: 'Tensor' }] },
    status: { status: 'fine' },
    getName: { id: 'not-an-id' },
    get: { objects: [{ id: 'o0000000000000001', typename: 'Blob', nbytes: 4, meta: {}, members: [] }] },
    listNames: { names: { a: 'o0000000000000001' } },
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-fake-'));
    path = join(dir, 'fake.sock');
    server = createServer((sock) => {
      const dec = new FrameDecoder();
      sock.on('data', (chunk: Buffer) => {
        for (const { header: h } of dec.push(chunk)) {
          if (h.t === 'hello') {
            sock.write(
              encodeFrame({
                t: 'ok',
                rid: h.rid,
                version: 1,
                instanceId: 0,
                storeId: 'fake',
                name: '',
                token: 'x'.repeat(32),
                maxFrame: 1 << 20,
                inlineLimit: 1024,
                session: 1,
                segments: 0,
              }),
            );
          } else sock.write(encodeFrame({ t: 'ok', rid: h.rid, ...(answers[String(h.t)] ?? {}) }));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
  });
  afterAll(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a malformed answer fails the call with ERR_PROTOCOL; a well-formed one is returned', async () => {
    await using c = await connect({ socket: path });
    expect(
      await Promise.all([
        errCode(c.list()),
        errCode(c.status()),
        errCode(c.getName('n')),
        errCode(c.get('o0000000000000001')),
      ]),
    ).toEqual(['ERR_PROTOCOL', 'ERR_PROTOCOL', 'ERR_PROTOCOL', 'ERR_PROTOCOL']);
    expect(await c.listNames()).toEqual({ a: 'o0000000000000001' });
  });

  it('a hello answer without the session fields fails connect with ERR_PROTOCOL', async () => {
    const bad = createServer((sock) => {
      const dec = new FrameDecoder();
      sock.on('data', (chunk: Buffer) => {
        for (const { header: h } of dec.push(chunk)) sock.write(encodeFrame({ t: 'ok', rid: h.rid, version: 1 }));
      });
    });
    const badPath = join(dir, 'bad.sock');
    await new Promise<void>((resolve) => bad.listen(badPath, resolve));
    try {
      expect(await errCode(connect({ socket: badPath }))).toBe('ERR_PROTOCOL');
    } finally {
      bad.close();
    }
  });
});
