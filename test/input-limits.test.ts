/**
 * Half-sent frames (issue 8, defect 7): the bytes of unfinished frames that
 * all connections hold are bounded together (maxBuffered, ERR_OUT_OF_MEMORY
 * for the connection that would exceed it), a frame begun and not finished
 * within frameTimeoutMs closes its connection (ERR_TIMEOUT), and IPC takes
 * frames of at most 64 KiB before hello, as RPC does. Raw sockets, real store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, MAX_HELLO_FRAME } from '../dist/src/protocol/frame.js';
import { closedWithin, RawConn, u32 } from './helpers/raw-conn.js';
import { helloFrame, type RpcStore, startRpcStore } from './helpers/rpc.js';

const KIB = 1024;
const BUDGET = 1024 * KIB;

/** A status request padded to `bytes` (the store ignores fields it does not know). */
function bigFrame(bytes: number, rid: number): Buffer {
  return encodeFrame({ t: 'status', rid, pad: 'x'.repeat(bytes) });
}

describe('input limits', () => {
  let s: RpcStore;
  const conns: RawConn[] = [];
  beforeAll(async () => {
    s = await startRpcStore('127.0.0.1', { size: 16 * 1024 * KIB, maxBuffered: BUDGET, frameTimeoutMs: 300 });
  });
  afterAll(async () => {
    for (const c of conns) c.destroy();
    await s?.stop();
  });

  async function open(transport: 'ipc' | 'rpc'): Promise<RawConn> {
    const c = await RawConn.open(transport === 'ipc' ? s.socket : s.endpoint);
    conns.push(c);
    if (transport === 'ipc') {
      expect((await c.hello())?.t).toBe('ok');
    } else {
      c.write(helloFrame(undefined, 7));
      expect((await c.waitFor((f) => f.rid === 7))?.t).toBe('ok');
    }
    return c;
  }

  it('IPC refuses a frame larger than 64 KiB before hello, as RPC does', async () => {
    for (const target of [s.socket, s.endpoint]) {
      const c = await RawConn.open(target);
      conns.push(c);
      c.write(u32(MAX_HELLO_FRAME + 1));
      const first = await c.waitFor(() => true);
      expect({ code: first?.code, after: await closedWithin(c, 5000) }).toEqual({
        code: 'ERR_PROTOCOL',
        after: 'closed',
      });
    }
  });

  it.each(['ipc', 'rpc'] as const)(
    'over %s, the connection whose half-sent frame would break the shared budget is failed; the others go on',
    async (transport) => {
      const a = await open(transport);
      const b = await open(transport === 'ipc' ? 'rpc' : 'ipc');
      const fa = bigFrame(600 * KIB, 11);
      const fb = bigFrame(600 * KIB, 12);
      a.write(fa.subarray(0, 550 * KIB));
      // Wait until the store has read all of a's bytes.
      for (let i = 0; i < 500 && s.store.inputBudget.used < 550 * KIB; i++) await new Promise((r) => setTimeout(r, 5));
      expect(s.store.inputBudget.used).toBe(550 * KIB);
      b.write(fb.subarray(0, 550 * KIB));
      const refused = await b.waitFor((f) => f.t === 'err');
      expect({ code: refused?.code, after: await closedWithin(b, 5000) }).toEqual({
        code: 'ERR_OUT_OF_MEMORY',
        after: 'closed',
      });
      a.write(fa.subarray(550 * KIB));
      expect((await a.waitFor((f) => f.rid === 11))?.t).toBe('ok');
      expect(s.store.inputBudget.used).toBe(0);
    },
  );

  it.each(['ipc', 'rpc'] as const)(
    'over %s, a frame started and not finished in time closes the connection; an idle one stays',
    async (transport) => {
      const idle = await open(transport);
      const slow = await open(transport);
      slow.write(encodeFrame({ t: 'status', rid: 21 }).subarray(0, 10));
      const first = await slow.waitFor(() => true, 1);
      expect({ code: first?.code, after: await closedWithin(slow, 5000) }).toEqual({
        code: 'ERR_TIMEOUT',
        after: 'closed',
      });
      idle.write(encodeFrame({ t: 'status', rid: 22 }));
      expect((await idle.waitFor((f) => f.rid === 22))?.t).toBe('ok');
      expect(s.store.inputBudget.used).toBe(0);
    },
  );
});
