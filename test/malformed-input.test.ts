/**
 * Hostile and broken peers: many raw connections at once, each sending one
 * kind of bad input, against a store running as its own process. The store
 * must answer each with the right error code (or just close), never crash,
 * and keep serving a well-behaved client that is connected throughout.
 */

import { connect, type Tensor, type TrellisClient, xorshift32 } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame } from '../dist/src/protocol/frame.js';
import { PROTOCOL_VERSION } from '../dist/src/protocol/messages.js';
import { eventually } from './helpers/child.js';
import { type BadInput, RawConn, rawFrame, runBadInput, u32 } from './helpers/raw-conn.js';
import { spawnStore } from './helpers/store.js';

const MAX_FRAME = 16 * 1024 * 1024;

/** Deterministic bytes, so a failure can be replayed. */
function randomBytes(seed: number, n: number): Buffer {
  const next = xorshift32(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

const hello = () => encodeFrame({ t: 'hello', rid: 1, version: PROTOCOL_VERSION, client: 'raw' });

describe('malformed input from many connections at once', () => {
  let store: Awaited<ReturnType<typeof spawnStore>>;
  let good: TrellisClient;

  beforeAll(async () => {
    store = await spawnStore(['--size', '64M']);
    good = await connect({ socket: store.socket, name: 'well-behaved' });
  });

  afterAll(async () => {
    if (store && store.child.exitCode !== null) console.error(`the store died: ${store.output()}`);
    await good?.close();
    await store?.stop();
  });

  it('answers each bad connection with its code, stays up, and keeps serving a good client', async () => {
    // A live session token and a dead one, for the fd-channel cases.
    const live = await RawConn.open(store.socket);
    const liveToken = String((await live.hello())?.token);
    const gone = await RawConn.open(store.socket);
    const deadToken = String((await gone.hello())?.token);
    gone.destroy();
    await gone.closed;
    await eventually(async () => (await good.status()).connections === 2, 'the closed session is dropped');

    const deep = 100_000;
    const cases: BadInput[] = [
      ...[1, 2, 3, 4, 5, 6, 7, 8].map(
        (seed): BadInput => ({
          name: `random bytes #${seed}`,
          send: () => randomBytes(seed, 1 + ((seed * 977) % 5000)),
          end: true,
          codes: ['ERR_PROTOCOL', 'none'],
          after: 'closed',
        }),
      ),
      {
        name: 'random header bytes under a valid length',
        send: () => rawFrame(randomBytes(99, 64)),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'truncated frame before hello',
        send: () => hello().subarray(0, 20),
        end: true,
        codes: ['none'],
        after: 'closed',
      },
      { name: 'truncated length prefix', send: () => Buffer.from([9, 0]), end: true, codes: ['none'], after: 'closed' },
      {
        name: 'length prefix one above the max frame',
        send: () => u32(MAX_FRAME + 1),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      { name: 'length prefix 0xffffffff', send: () => u32(0xffffffff), codes: ['ERR_PROTOCOL'], after: 'closed' },
      {
        name: 'frame length below the header-length field',
        send: () => Buffer.concat([u32(2), Buffer.from([0, 0])]),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'header length larger than the frame',
        send: () => Buffer.concat([u32(4 + 10), u32(1000), Buffer.from('{"t":"x"}\0')]),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      { name: 'non-JSON header', send: () => rawFrame('{t: hello'), codes: ['ERR_PROTOCOL'], after: 'closed' },
      {
        name: 'invalid UTF-8 header',
        send: () => rawFrame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'header that is a JSON array',
        send: () => rawFrame('["hello",1]'),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      { name: 'header that is JSON null', send: () => rawFrame('null'), codes: ['ERR_PROTOCOL'], after: 'closed' },
      {
        name: 'header without "t"',
        send: () => rawFrame(`{"rid":1,"version":${PROTOCOL_VERSION}}`),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: '"t" that is a number',
        send: () => rawFrame('{"t":1,"rid":1}'),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'unknown request type before hello',
        send: () => encodeFrame({ t: 'selfDestruct', rid: 1 }),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'request type "constructor"',
        send: () => encodeFrame({ t: 'constructor', rid: 1 }),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'request type "__proto__"',
        send: () => rawFrame('{"t":"__proto__","rid":1}'),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'status before hello',
        send: () => encodeFrame({ t: 'status', rid: 1 }),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'create before hello',
        send: () => encodeFrame({ t: 'create', rid: 1, size: 4096 }),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'wrong protocol version',
        send: () => encodeFrame({ t: 'hello', rid: 1, version: PROTOCOL_VERSION + 1 }),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'protocol version 0',
        send: () => encodeFrame({ t: 'hello', rid: 1, version: 0 }),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'protocol version as a string',
        send: () => encodeFrame({ t: 'hello', rid: 1, version: String(PROTOCOL_VERSION) }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'closed',
      },
      {
        name: 'fds with a made-up token',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: 'f'.repeat(32), segments: [0] }),
        codes: ['ERR_UNAUTHORIZED'],
        after: 'closed',
      },
      {
        name: 'fds with the token of a closed session',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: deadToken, segments: [0] }),
        codes: ['ERR_UNAUTHORIZED'],
        after: 'closed',
      },
      {
        name: 'fds with a token of the wrong type',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: 42, segments: [0] }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'closed',
      },
      {
        name: 'fds with a live token and no segments',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: liveToken, segments: [] }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'closed',
      },
      {
        name: 'fds asking for the fast path with a non-boolean fastpath',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: liveToken, segments: [], fastpath: 'yes' }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'closed',
      },
      {
        name: 'fds asking for the fast path with a made-up token',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: 'f'.repeat(32), segments: [], fastpath: true }),
        codes: ['ERR_UNAUTHORIZED'],
        after: 'closed',
      },
      {
        name: 'fds with a live token and an unknown segment',
        send: () => encodeFrame({ t: 'fds', rid: 1, token: liveToken, segments: [9999] }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'closed',
      },
      // ---- from clients that did the handshake: bad fields leave the connection usable
      {
        name: 'create with size "x"',
        afterHello: true,
        send: () => encodeFrame({ t: 'create', rid: 7, size: 'x' }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'create with a negative size',
        afterHello: true,
        send: () => encodeFrame({ t: 'create', rid: 7, size: -1 }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'create larger than any segment',
        afterHello: true,
        send: () => encodeFrame({ t: 'create', rid: 7, size: Number.MAX_SAFE_INTEGER }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'get with ids [1]',
        afterHello: true,
        send: () => encodeFrame({ t: 'get', rid: 7, ids: [1] }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'get with ids that is not an array',
        afterHello: true,
        send: () => encodeFrame({ t: 'get', rid: 7, ids: 'o0000000000000001' }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'release with a malformed id',
        afterHello: true,
        send: () => encodeFrame({ t: 'release', rid: 7, ids: ['o123'] }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'delete with deep "yes"',
        afterHello: true,
        send: () => encodeFrame({ t: 'delete', rid: 7, ids: [], deep: 'yes' }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'rid that is a string',
        afterHello: true,
        send: () => encodeFrame({ t: 'status', rid: 'seven' }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'putName with a numeric name',
        afterHello: true,
        send: () => encodeFrame({ t: 'putName', rid: 7, name: 5, id: 'o0000000000000001' }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'getName with a negative timeout',
        afterHello: true,
        send: () => encodeFrame({ t: 'getName', rid: 7, name: 'n', wait: true, timeoutMs: -5 }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'put whose object is an array',
        afterHello: true,
        send: () => encodeFrame({ t: 'put', rid: 7, object: [] }),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: `put with metadata nested ${deep} deep`,
        afterHello: true,
        send: () =>
          rawFrame(`{"t":"put","rid":7,"object":{"typename":"X","meta":{"a":${'['.repeat(deep)}${']'.repeat(deep)}}}}`),
        codes: ['ERR_BAD_REQUEST'],
        after: 'open',
      },
      {
        name: 'make over members that do not exist',
        afterHello: true,
        send: () => encodeFrame({ t: 'make', rid: 7, object: { typename: 'X', members: ['o00000000deadbeef'] } }),
        codes: ['ERR_OBJECT_NOT_FOUND'],
        after: 'open',
      },
      {
        name: 'seal of an id that does not exist',
        afterHello: true,
        send: () => encodeFrame({ t: 'seal', rid: 7, id: 'o00000000deadbeef' }),
        codes: ['ERR_OBJECT_NOT_FOUND'],
        after: 'open',
      },
      {
        name: 'unknown request type after hello',
        afterHello: true,
        send: () => encodeFrame({ t: 'selfDestruct', rid: 7 }),
        codes: ['ERR_PROTOCOL'],
        after: 'open',
      },
      {
        name: 'a second hello',
        afterHello: true,
        send: () => encodeFrame({ t: 'hello', rid: 7, version: PROTOCOL_VERSION }),
        codes: ['ERR_PROTOCOL'],
        after: 'open',
      },
      {
        name: 'fds after hello',
        afterHello: true,
        send: () => encodeFrame({ t: 'fds', rid: 7, token: liveToken, segments: [0] }),
        codes: ['ERR_PROTOCOL'],
        after: 'open',
      },
      // ---- broken framing after the handshake still closes the connection
      {
        name: 'oversized length prefix after hello',
        afterHello: true,
        send: () => u32(MAX_FRAME + 1),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'header that is a JSON array after hello',
        afterHello: true,
        send: () => rawFrame('[{"t":"status","rid":7}]'),
        codes: ['ERR_PROTOCOL'],
        after: 'closed',
      },
      {
        name: 'truncated frame after hello',
        afterHello: true,
        send: () => encodeFrame({ t: 'status', rid: 7 }).subarray(0, 12),
        end: true,
        codes: ['none'],
        after: 'closed',
      },
    ];

    // The good client works while the bad connections hammer the store.
    let stop = false;
    let rounds = 0;
    const goodLoop = (async () => {
      while (!stop) {
        const id = await good.put(new Float32Array([rounds, 1, 2]));
        const t = (await good.get(id)) as Tensor;
        if (t.data[0] !== rounds) throw new Error(`round ${rounds}: read ${t.data[0]}`);
        await good.release(id);
        await good.delete(id);
        rounds++;
      }
    })();

    const observed = await Promise.all(
      cases.map((k) =>
        runBadInput(
          () => RawConn.open(store.socket),
          (c) => c.hello(),
          k,
        ),
      ),
    );

    // Extra stress in the same window: abrupt resets mid-frame, ten during the hello and ten during a
    // request after it, and a valid hello sent byte by byte.
    await eventually(async () => (await good.status()).connections === 2, 'the cases are dropped (good + live left)');
    const ready = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const c = await RawConn.open(store.socket);
        await c.hello();
        return c;
      }),
    );
    expect((await good.status()).connections).toBe(12); // the store holds each one
    await Promise.all([
      ...Array.from({ length: 10 }, async (_, i) => {
        const c = await RawConn.open(store.socket);
        c.write(hello().subarray(0, 5 + i));
        c.destroy();
        await c.closed;
      }),
      ...ready.map(async (c, i) => {
        const frame = encodeFrame({ t: 'status', rid: 9 });
        c.write(frame.subarray(0, frame.length - 1 - i));
        c.destroy();
        await c.closed;
      }),
    ]);
    await eventually(
      async () => (await good.status()).connections === 2,
      'the store lets go of every reset connection',
    );
    const slow = await RawConn.open(store.socket);
    for (const byte of hello()) {
      slow.write(Buffer.from([byte]));
      await new Promise((r) => setTimeout(r, 1));
    }
    const slowAnswer = await slow.waitFor((f) => f.rid === 1);
    expect(slowAnswer).toMatchObject({ t: 'ok', version: PROTOCOL_VERSION });
    slow.destroy();

    // Several frames in one write: each is answered in order, a bad one in between does not stop the rest.
    const batch = await RawConn.open(store.socket);
    await batch.hello();
    batch.write(
      Buffer.concat([
        encodeFrame({ t: 'status', rid: 21 }),
        encodeFrame({ t: 'create', rid: 22, size: 'x' }),
        encodeFrame({ t: 'listNames', rid: 23 }),
      ]),
    );
    await batch.waitFor((f) => f.rid === 23);
    expect(batch.frames.slice(1).map((f) => [f.rid, f.t, f.code])).toEqual([
      [21, 'ok', undefined],
      [22, 'err', 'ERR_BAD_REQUEST'],
      [23, 'ok', undefined],
    ]);
    batch.destroy();

    stop = true;
    await goodLoop;

    const wrong = observed.filter((o, i) => !cases[i].codes.includes(o.code) || o.after !== cases[i].after);
    expect(wrong).toEqual([]);
    expect(rounds).toBeGreaterThan(0);

    // Every object's metadata can still be sent back (a hostile deep one would make list or get throw).
    expect(await good.list()).toBeInstanceOf(Array);

    // The store process is alive and serving, and it let go of every bad connection.
    expect(store.child.exitCode).toBeNull();
    live.destroy();
    await eventually(async () => (await good.status()).connections === 1, 'only the good client is left');
    const big = new Float64Array(1 << 16).map((_, i) => i); // above the inline limit: create + fds + seal
    const id = await good.put(big);
    const back = (await good.get(id)) as Tensor;
    expect(back.data[65535]).toBe(65535);
    await good.release(id);
    await good.delete(id);
    const st = await good.status();
    expect(st.memoryUsed).toBe(0);
    expect(store.child.exitCode).toBeNull();
  });
});
