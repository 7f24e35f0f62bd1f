/**
 * Hostile and broken RPC peers against a store running as its own process
 * (`trellis store --rpc-port`): bad framing, bad raw announcements, bad
 * fields, requests that need shared memory, and seeded random frames. Each
 * connection gets the right code (or is just closed); the store never
 * crashes, keeps nothing of what it refused, and keeps serving a good client.
 */

import { connect, type Tensor, xorshift32 } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame } from '../dist/src/protocol/frame.js';
import { type BadInput, RawConn, rawFrame, runBadInput, u32 } from './helpers/raw-conn.js';
import { helloFrame, MIB, rpcFrame, TOKEN } from './helpers/rpc.js';
import { spawnStore } from './helpers/store.js';

function randomBytes(seed: number, n: number): Buffer {
  const next = xorshift32(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

/** A random frame that is well framed but says anything at all. */
function fuzzFrame(seed: number): Buffer {
  const next = xorshift32(seed);
  const pick = <T>(xs: T[]): T => xs[next() % xs.length];
  const values = [null, true, -1, 0, 1.5, 2 ** 53, 'x', '', [], {}, ['o0000000000000001'], { typename: 'Blob' }];
  const header: Record<string, unknown> = {
    t: pick(['put', 'make', 'get', 'delete', 'putName', 'getName', 'list', 'status', 'hello', 'create', 'read', 'zzz']),
    rid: pick([1, 2, -1, 'r', 0xffffffff]),
  };
  for (const f of ['ids', 'id', 'name', 'object', 'deep', 'wait', 'timeoutMs', 'limit', 'members', 'meta', 'tag']) {
    if (next() % 3 === 0) header[f] = pick(values);
  }
  return encodeFrame(header);
}

describe('malformed RPC input', () => {
  let store: Awaited<ReturnType<typeof spawnStore>>;
  let endpoint: { host: string; port: number };
  const savedToken = process.env.TRELLIS_TOKEN;

  beforeAll(async () => {
    process.env.TRELLIS_TOKEN = TOKEN;
    store = await spawnStore(['--size', '64M', '--rpc-port', '0', '--rpc-host', '127.0.0.1']);
    const m = /^([\d.]+):(\d+)$/.exec(String(store.ready.rpc));
    if (!m) throw new Error(`no rpc endpoint in: ${store.output()}`);
    endpoint = { host: m[1], port: Number(m[2]) };
  });

  afterAll(async () => {
    if (savedToken === undefined) delete process.env.TRELLIS_TOKEN;
    else process.env.TRELLIS_TOKEN = savedToken;
    if (store && store.child.exitCode !== null) console.error(`the store died: ${store.output()}`);
    await store?.stop();
  });

  const runCase = (k: BadInput) =>
    runBadInput(
      () => RawConn.open(endpoint),
      (c) => {
        c.write(helloFrame());
        return c.waitFor((f) => f.rid === 1);
      },
      k,
    );

  it('answers each bad peer with its code, stays up, and keeps nothing', async () => {
    await using good = await connect({ rpc: `${endpoint.host}:${endpoint.port}`, token: TOKEN });
    const before = await good.status();
    const obj = { typename: 'Blob' };
    const deepMeta = JSON.parse(`${'{"a":'.repeat(40)}1${'}'.repeat(40)}`);
    const closed = (name: string, afterHello: boolean, send: () => Buffer, codes = ['ERR_PROTOCOL']): BadInput => ({
      name,
      afterHello,
      send,
      codes,
      after: 'closed',
    });
    const open = (name: string, send: () => Buffer, codes: string[]): BadInput => ({
      name,
      afterHello: true,
      send,
      codes,
      after: 'open',
    });
    const cases: BadInput[] = [
      // before the handshake: nothing gets past the token check
      ...[1, 2, 3].map(
        (seed): BadInput => ({
          name: `random bytes #${seed}`,
          afterHello: false,
          send: () => randomBytes(seed, 1 + ((seed * 977) % 5000)),
          end: true,
          codes: ['ERR_PROTOCOL', 'ERR_UNAUTHORIZED', 'none'],
          after: 'closed',
        }),
      ),
      closed('a frame above the 64 KiB allowed before hello', false, () => u32(64 * 1024 + 1)),
      closed('a hello with a 100 KB token', false, () => helloFrame('t'.repeat(100_000))),
      closed('length prefix 0xffffffff', false, () => u32(0xffffffff)),
      closed('frame shorter than its header-length field', false, () => Buffer.concat([u32(2), Buffer.from([0, 0])])),
      closed('non-JSON header', false, () => rawFrame('{t: hello')),
      closed('header that is a JSON array', false, () => rawFrame('["hello"]')),
      closed('a raw announcement that is not a list', false, () =>
        rpcFrame({ t: 'hello', rid: 1, version: 1, token: TOKEN, raw: 'lots' }),
      ),
      closed('a hello with raw bytes', false, () =>
        rpcFrame({ t: 'hello', rid: 1, version: 1, token: TOKEN, raw: [4] }),
      ),
      closed('the right token, a wrong version', false, () =>
        rpcFrame({ t: 'hello', rid: 1, version: 99, token: TOKEN }),
      ),
      closed('the right token, a bad rid', false, () => rpcFrame({ t: 'hello', rid: -5, version: 1, token: TOKEN }), [
        'ERR_BAD_REQUEST',
      ]),
      closed('a request instead of a hello', false, () => rpcFrame({ t: 'status', rid: 1 }), ['ERR_UNAUTHORIZED']),
      {
        name: 'a truncated hello',
        afterHello: false,
        send: () => helloFrame().subarray(0, 12),
        end: true,
        codes: ['none'],
        after: 'closed',
      },
      // after the handshake: a bad field keeps the connection; broken framing closes it
      open('unknown request type', () => rpcFrame({ t: 'explode', rid: 7 }), ['ERR_PROTOCOL']),
      ...['create', 'seal', 'abort', 'release', 'fds', 'endScope', 'claimScope'].map((t) =>
        open(`IPC-only ${t}`, () => rpcFrame({ t, rid: 7, size: 10, id: 'o0000000000000001', ids: [] }), [
          'ERR_UNSUPPORTED',
        ]),
      ),
      open('get with a bad id', () => rpcFrame({ t: 'get', rid: 7, ids: ['nope'] }), ['ERR_BAD_REQUEST']),
      open(
        'get with raw bytes (skipped)',
        () => Buffer.concat([rpcFrame({ t: 'get', rid: 7, ids: [], raw: [10] }), Buffer.alloc(10)]),
        ['ERR_BAD_REQUEST'],
      ),
      open('put without raw', () => rpcFrame({ t: 'put', rid: 7, object: obj }), ['ERR_BAD_REQUEST']),
      open(
        'put of a Blob with two parts (skipped)',
        () => Buffer.concat([rpcFrame({ t: 'put', rid: 7, object: obj, raw: [3, 4] }), Buffer.alloc(7)]),
        ['ERR_BAD_REQUEST'],
      ),
      open(
        'put with metadata nested 40 deep (skipped)',
        () =>
          Buffer.concat([
            rpcFrame({ t: 'put', rid: 7, object: { typename: 'T', meta: deepMeta }, raw: [8] }),
            Buffer.alloc(8),
          ]),
        ['ERR_BAD_REQUEST'],
      ),
      open(
        'put over a member that does not exist (skipped)',
        () =>
          Buffer.concat([
            rpcFrame({ t: 'put', rid: 7, object: { typename: 'T', members: ['o00000000000fffff'] }, raw: [MIB] }),
            Buffer.alloc(MIB),
          ]),
        ['ERR_OBJECT_NOT_FOUND'],
      ),
      open(
        'put larger than the store (skipped)',
        () => Buffer.concat([rpcFrame({ t: 'put', rid: 7, object: obj, raw: [100 * MIB] }), Buffer.alloc(100 * MIB)]),
        ['ERR_OUT_OF_MEMORY'],
      ),
      open('a second hello', () => helloFrame(TOKEN, 7), ['ERR_PROTOCOL']),
      open('read without a tag', () => rpcFrame({ t: 'read', rid: 7 }), ['ERR_BAD_REQUEST']),
      open('read with a negative offset', () => rpcFrame({ t: 'read', rid: 7, tag: 'x', offset: -1 }), [
        'ERR_BAD_REQUEST',
      ]),
      open('read with a 5 GiB length', () => rpcFrame({ t: 'read', rid: 7, tag: 'x', length: 5 * 1024 ** 3 }), [
        'ERR_BAD_REQUEST',
      ]),
      open('read with a wait that is not a boolean', () => rpcFrame({ t: 'read', rid: 7, tag: 'x', wait: 'yes' }), [
        'ERR_BAD_REQUEST',
      ]),
      open('read of a tag nobody bound', () => rpcFrame({ t: 'read', rid: 7, tag: 'nobody' }), ['ERR_NAME_NOT_FOUND']),
      open(
        'read with raw bytes (skipped)',
        () => Buffer.concat([rpcFrame({ t: 'read', rid: 7, tag: 'x', raw: [4] }), Buffer.alloc(4)]),
        ['ERR_BAD_REQUEST'],
      ),
      closed('raw with a negative size', true, () => rpcFrame({ t: 'put', rid: 7, object: obj, raw: [-1] })),
      closed('raw with a fractional size', true, () => rpcFrame({ t: 'put', rid: 7, object: obj, raw: [1.5] })),
      closed('raw with a 5 GiB part', true, () => rpcFrame({ t: 'put', rid: 7, object: obj, raw: [5 * 1024 ** 3] })),
      closed('raw with 70 000 parts', true, () =>
        rpcFrame({ t: 'put', rid: 7, object: { typename: 'T' }, raw: new Array(70_000).fill(0) }),
      ),
      closed('a frame with a payload', true, () => encodeFrame({ t: 'status', rid: 7 }, Buffer.from('x'))),
      closed('a frame above the 16 MiB maximum', true, () => u32(16 * MIB + 1)),
      closed('random header bytes', true, () => rawFrame(randomBytes(5, 64))),
      ...[11, 12, 13, 14, 15, 16, 17, 18].map(
        (seed): BadInput => ({
          name: `random frames #${seed}`,
          afterHello: true,
          send: () => Buffer.concat(Array.from({ length: 50 }, (_, i) => fuzzFrame(seed * 1000 + i))),
          codes: [
            'ok',
            'ERR_BAD_REQUEST',
            'ERR_PROTOCOL',
            'ERR_UNSUPPORTED',
            'ERR_OBJECT_NOT_FOUND',
            'ERR_NAME_NOT_FOUND',
            'ERR_TIMEOUT',
          ],
          after: 'open',
        }),
      ),
    ];
    const results = await Promise.all(cases.map(runCase));
    const bad = results.filter((r, i) => !cases[i].codes.includes(r.code) || r.after !== cases[i].after);
    expect(bad).toEqual([]);

    // The store is alive, serves the good client, and kept nothing of what it refused.
    expect(store.child.exitCode).toBeNull();
    const after = await good.status();
    expect(after.memoryUsed).toBe(before.memoryUsed);
    expect(after.objects).toBe(before.objects);
    expect(after.blobs).toBe(before.blobs);
    const id = await good.put(Float32Array.from([1, 2]));
    expect(Array.from(((await good.get(id)) as Tensor).data as Float32Array)).toEqual([1, 2]);
  });
});
