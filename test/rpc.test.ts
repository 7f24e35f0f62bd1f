/**
 * RPC: a client with no local store reads and writes over TCP (copies, byte
 * exact), the token gate, and broken streams that must leave nothing behind.
 * Two stores run in this process on two loopback addresses, each with its own
 * socket and arena; the clients reach them over real TCP.
 */
import * as arrow from 'apache-arrow';
import { connect, RemoteClient, type StoredObject, type Tensor } from 'trellis';
import { RpcServer } from 'trellis/store';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../dist/src/native.js';
import { bytesMismatch, pattern } from './helpers/bytes.js';
import { errCode, eventually } from './helpers/child.js';
import { RawConn } from './helpers/raw-conn.js';
import { helloFrame, MIB, type RpcStore, rpcFrame, startRpcStore, TOKEN } from './helpers/rpc.js';

/** Where the view starts in memory, modulo 64 (0: 64-byte aligned). */
function offset64(v: ArrayBufferView): number {
  return Number((native.address(v.buffer as ArrayBuffer) + BigInt(v.byteOffset)) % 64n);
}

describe('RPC client (no local store)', () => {
  let a: RpcStore;
  let b: RpcStore;
  beforeAll(async () => {
    a = await startRpcStore('127.0.0.1', { instanceId: 1 });
    b = await startRpcStore('127.0.0.2', { instanceId: 2 });
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
  });

  it('serves on the address asked for, with the port it bound', () => {
    expect(a.endpoint.host).toBe('127.0.0.1');
    expect(b.endpoint.host).toBe('127.0.0.2');
    expect(a.endpoint.port).toBeGreaterThan(0);
    expect(a.store.status().rpc).toMatchObject({ host: '127.0.0.1', port: a.endpoint.port });
  });

  it('puts and gets tensors of every kind, byte-exact, in fresh 64-byte aligned buffers', async () => {
    await using c = await connect({ rpc: b.rpc, token: TOKEN });
    expect(c).toBeInstanceOf(RemoteClient);
    expect(c.instanceId).toBe(2);
    const f32 = Float32Array.from({ length: 1000 }, (_, i) => i / 3);
    const i64 = BigInt64Array.from({ length: 257 }, (_, i) => BigInt(i) * -123456789n);
    const f16 = new Uint16Array(pattern(2 * 8198, 3).buffer);
    const big = new Float64Array(pattern(24 * MIB, 4).buffer);
    const ids = [
      await c.put(f32),
      await c.put({ dtype: 'int64', shape: [257], data: i64 }),
      await c.put({ dtype: 'float16', shape: [4099, 2], data: f16 }),
      await c.put({ dtype: 'float64', shape: [3 * MIB, 1], data: big }, { name: 'rpc/big' }),
      await c.put({ dtype: 'bool', shape: [0], data: new Uint8Array(0) }),
    ];
    const values = (await c.getMany(ids)) as Tensor[];
    expect(values.map((t) => t.dtype)).toEqual(['float32', 'int64', 'float16', 'float64', 'bool']);
    expect(values[2].shape).toEqual([4099, 2]);
    expect(values[3].shape).toEqual([3 * MIB, 1]);
    [f32, i64, f16, big, new Uint8Array(0)].forEach((want, i) => {
      expect(bytesMismatch(values[i].data, want)).toBeNull();
      if (values[i].data.byteLength > 0) expect(offset64(values[i].data)).toBe(0);
    });
    // A copy: writable, the caller's own, and changing it changes nothing in the store.
    (values[0].data as Float32Array)[0] = 42;
    expect(((await c.get(ids[0])) as Tensor).data[0]).toBe(0);
    expect(await c.getName('rpc/big')).toBe(ids[3]);
  });

  it('puts and gets blobs and Arrow tables byte-exact; IPC and RPC see the same objects', async () => {
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    await using ipc = await connect({ socket: a.socket });
    const bytes = pattern(5 * MIB + 13, 7);
    const blobId = await r.putBlob(bytes);
    const n = 5000;
    const table = new arrow.Table({
      n: arrow.vectorFromArray(Int32Array.from({ length: n }, (_, i) => i * 7)),
      x: arrow.vectorFromArray(Float64Array.from({ length: n }, (_, i) => Math.sin(i))),
      s: arrow.vectorFromArray(
        Array.from({ length: n }, (_, i) => (i % 3 === 0 ? null : `row ${i}`)),
        new arrow.Utf8(),
      ),
      d: arrow.vectorFromArray(
        Array.from({ length: n }, (_, i) => ['red', 'green', 'blue'][i % 3]),
        new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32()),
      ),
    });
    const tableId = await r.put(table);

    const gotBlob = await r.getBlob(blobId);
    expect(bytesMismatch(gotBlob, bytes)).toBeNull();
    expect(offset64(gotBlob)).toBe(0);
    const gotTable = (await r.get(tableId)) as arrow.Table;
    expect(gotTable.numRows).toBe(5000);
    expect(gotTable.toArray().map((row) => row.toJSON())).toEqual(table.toArray().map((row) => row.toJSON()));

    // What went in over TCP reads back over shared memory, and the other way round.
    expect(bytesMismatch(await ipc.getBlob(blobId), bytes)).toBeNull();
    expect(((await ipc.get(tableId)) as arrow.Table).getChild('n')?.get(4999)).toBe(4999 * 7);
    const viaIpc = await ipc.put(Float32Array.from([1, 2, 3]));
    expect(Array.from(((await r.get(viaIpc)) as Tensor).data as Float32Array)).toEqual([1, 2, 3]);
  });

  it('composites stream every member blob, blob by blob', async () => {
    await using c = await connect({ rpc: b.rpc, token: TOKEN });
    const parts = [pattern(3 * MIB, 11), pattern(1, 12), pattern(0, 13), pattern(7 * MIB + 5, 14)];
    const ids = [];
    for (const p of parts) ids.push(await c.putBlob(p));
    const shard = await c.put(Int16Array.from([1, -2, 3]));
    const id = await c.putObject({ typename: 'Shards', meta: { k: [1, 'two'] }, members: [...ids, shard, ids[0]] });
    const v = (await c.get(id)) as StoredObject;
    expect(v.typename).toBe('Shards');
    expect(v.meta).toEqual({ k: [1, 'two'] });
    expect(v.nbytes).toBe(3 * MIB * 2 + 1 + 7 * MIB + 5 + 6);
    expect(v.members).toHaveLength(6);
    parts.forEach((p, i) => {
      expect(bytesMismatch(v.members[i] as Uint8Array, p)).toBeNull();
    });
    expect(Array.from((v.members[4] as Tensor).data as Int16Array)).toEqual([1, -2, 3]);
    expect(bytesMismatch(v.members[5] as Uint8Array, parts[0])).toBeNull();
  });

  it('names, lists, status and delete work as over IPC', async () => {
    await using c = await connect({ rpc: a.rpc, token: TOKEN });
    await using ipc = await connect({ socket: a.socket });
    const id = await c.put(Uint8Array.from([9, 8, 7]));
    const waiting = c.getName('rpc/later', { wait: true, timeoutMs: 20_000 });
    await ipc.putName('rpc/later', id);
    expect(await waiting).toBe(id);
    expect(await c.listNames('rpc/')).toMatchObject({ 'rpc/later': id });
    expect((await c.list({ typename: 'Tensor' })).map((o) => o.id)).toContain(id);
    expect(await errCode(c.getName('rpc/none'))).toBe('ERR_NAME_NOT_FOUND');
    expect(await errCode(c.getName('rpc/none', { wait: true, timeoutMs: 50 }))).toBe('ERR_TIMEOUT');
    await c.dropName('rpc/later');
    const st = await c.status();
    expect(st.instanceId).toBe(1);
    expect(st.rpc?.port).toBe(a.endpoint.port);
    await c.delete(id);
    expect(await errCode(c.get(id))).toBe('ERR_OBJECT_NOT_FOUND');
  });

  it('refuses what needs shared memory, and checks its arguments', async () => {
    const c = await connect({ rpc: a.rpc, token: TOKEN });
    expect(await errCode(c.createBlob(10))).toBe('ERR_UNSUPPORTED');
    expect(await errCode(c.createTensor('float32', [2]))).toBe('ERR_UNSUPPORTED');
    expect(await errCode(() => c.getSync('o0000000000000001'))).toBe('ERR_UNSUPPORTED');
    expect(await errCode(c.get('nope'))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(c.release('o0000000000000001'))).toBe('ERR_NOT_REFERENCED');
    const id = await c.put(Float64Array.from([1]));
    await c.get(id);
    await c.get(id);
    await c.release(id);
    await c.release(id);
    expect(await errCode(c.release(id))).toBe('ERR_NOT_REFERENCED');
    await c.close();
    await c.close();
    expect(await errCode(c.get(id))).toBe('ERR_CLOSED');
    expect(await errCode(connect({ rpc: 'no-port', token: TOKEN }))).toBe('ERR_BAD_REQUEST');
  });

  it('errors from the store arrive with their codes', async () => {
    await using c = await connect({ rpc: a.rpc, token: TOKEN });
    const id = await c.put(Float32Array.from([1]), { name: 'rpc/taken' });
    expect(await errCode(c.put(Float32Array.from([2]), { name: 'rpc/taken' }))).toBe('ERR_OBJECT_EXISTS');
    expect(await errCode(c.putObject({ typename: 'X', members: ['o00ff000000000001'] }))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(c.putBlob(new Uint8Array(300 * MIB)))).toBe('ERR_OUT_OF_MEMORY');
    // The connection is still in step after the refused 300 MiB.
    expect(await c.getName('rpc/taken')).toBe(id);
  });
});

describe('RPC token', () => {
  let a: RpcStore;
  let secret: string;
  const conns: RawConn[] = [];
  beforeAll(async () => {
    a = await startRpcStore('127.0.0.1');
    await using c = await connect({ rpc: a.rpc, token: TOKEN });
    secret = await c.put(Uint8Array.from([0x53, 0x45, 0x43, 0x52, 0x45, 0x54]), { name: 'secret' });
  });
  afterEach(() => {
    for (const c of conns.splice(0)) c.destroy();
  });
  afterAll(async () => {
    await a?.stop();
  });

  async function raw(): Promise<RawConn> {
    const c = await RawConn.open(a.endpoint);
    conns.push(c);
    return c;
  }

  it('a wrong or missing token gives ERR_UNAUTHORIZED', async () => {
    expect(await errCode(connect({ rpc: a.rpc, token: 'wrong-token-0123456789abcdef' }))).toBe('ERR_UNAUTHORIZED');
    expect(await errCode(connect({ rpc: a.rpc, token: `${TOKEN}x` }))).toBe('ERR_UNAUTHORIZED');
    const saved = process.env.TRELLIS_TOKEN;
    delete process.env.TRELLIS_TOKEN;
    try {
      expect(await errCode(connect({ rpc: a.rpc }))).toBe('ERR_UNAUTHORIZED');
      process.env.TRELLIS_TOKEN = TOKEN;
      await using c = await connect({ rpc: a.rpc });
      expect(await c.getName('secret')).toBe(secret);
    } finally {
      if (saved === undefined) delete process.env.TRELLIS_TOKEN;
      else process.env.TRELLIS_TOKEN = saved;
    }
  });

  it('refuses before any data: requests sent with or before a bad hello get nothing back', async () => {
    const before = a.store.status().rpc as unknown as { authFailures: number };
    const cases: Buffer[] = [
      // no hello at all, straight to a get
      rpcFrame({ t: 'get', rid: 1, ids: [secret] }),
      // a hello without a token, with requests pipelined behind it
      Buffer.concat([
        rpcFrame({ t: 'hello', rid: 1, version: 1 }),
        rpcFrame({ t: 'get', rid: 2, ids: [secret] }),
        rpcFrame({ t: 'getName', rid: 3, name: 'secret' }),
      ]),
      // a wrong token
      Buffer.concat([helloFrame('nope'), rpcFrame({ t: 'getName', rid: 2, name: 'secret' })]),
      // a token that is not a string, and an empty one
      helloFrame(123),
      helloFrame(''),
    ];
    for (const [i, bytes] of cases.entries()) {
      const c = await raw();
      c.write(bytes);
      await c.closed;
      expect(c.frames, `case ${i}`).toHaveLength(1);
      expect(c.frames[0]).toMatchObject({ t: 'err', code: 'ERR_UNAUTHORIZED' });
      expect(c.payloads.map((p) => p.length)).toEqual([0]);
      expect(JSON.stringify(c.frames)).not.toContain(secret);
    }
    const after = a.store.status().rpc as unknown as { authFailures: number };
    expect(after.authFailures - before.authFailures).toBe(cases.length);
  });

  it('the right token opens the connection; a second hello is refused', async () => {
    const c = await raw();
    c.write(helloFrame());
    expect(await c.waitFor((f) => f.rid === 1)).toMatchObject({ t: 'ok', version: 1 });
    expect(await c.request({ t: 'getName', name: 'secret' })).toMatchObject({ t: 'ok', id: secret });
    expect(await c.request({ t: 'hello', version: 1, token: TOKEN })).toMatchObject({ code: 'ERR_PROTOCOL' });
    expect(c.isOpen).toBe(true);
  });
});

describe('RPC broken streams', () => {
  let a: RpcStore;
  const conns: RawConn[] = [];
  beforeAll(async () => {
    a = await startRpcStore('127.0.0.1', { size: 64 * MIB });
  });
  afterEach(() => {
    for (const c of conns.splice(0)) c.destroy();
  });
  afterAll(async () => {
    await a?.stop();
  });

  async function authed(): Promise<RawConn> {
    const c = await RawConn.open(a.endpoint);
    conns.push(c);
    c.write(helloFrame());
    expect(await c.waitFor((f) => f.rid === 1)).toMatchObject({ t: 'ok' });
    return c;
  }

  const usage = () => {
    const s = a.store.status();
    return { memoryUsed: s.memoryUsed, objects: s.objects, blobs: s.blobs, entries: s.entries };
  };

  it('a put stream cut after half its bytes leaves no partial object, and the memory comes back', async () => {
    const before = usage();
    const c = await authed();
    const size = 16 * MIB;
    const object = { typename: 'Tensor', meta: { dtype: 'uint8', shape: [size] } };
    c.write(rpcFrame({ t: 'put', rid: 2, object, name: 'half', raw: [size] }));
    c.write(pattern(size / 2, 1));
    // The blob was allocated when the header came and is being written.
    await eventually(() => a.store.status().memoryUsed >= before.memoryUsed + size, 'allocation on the header');
    expect(a.store.table.list(undefined, 1000).objects.map((o) => o.nbytes)).not.toContain(size);
    c.destroy();
    await eventually(() => a.store.status().memoryUsed === before.memoryUsed, 'memory given back');
    expect(usage()).toEqual(before);
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    expect(await errCode(r.getName('half'))).toBe('ERR_NAME_NOT_FOUND');
  });

  it('a multi-blob put cut between blobs aborts the blobs already complete', async () => {
    const before = usage();
    const c = await authed();
    c.write(rpcFrame({ t: 'put', rid: 2, object: { typename: 'Pair' }, raw: [MIB, MIB, MIB] }));
    c.write(pattern(2 * MIB + 100, 2));
    await eventually(() => a.store.status().memoryUsed === before.memoryUsed + 3 * MIB, 'allocation');
    c.end();
    await c.closed;
    await eventually(() => a.store.status().memoryUsed === before.memoryUsed, 'memory given back');
    expect(usage()).toEqual(before);
  });

  it('a refused put skips its bytes and the stream stays in step', async () => {
    const before = usage();
    const c = await authed();
    // Too big for the store: refused on the header, its 80 MiB skipped as they come.
    c.write(rpcFrame({ t: 'put', rid: 2, object: { typename: 'Blob' }, raw: [80 * MIB] }));
    expect(await c.waitFor((f) => f.rid === 2)).toMatchObject({ t: 'err', code: 'ERR_OUT_OF_MEMORY' });
    for (let i = 0; i < 10; i++) c.write(pattern(8 * MIB, i));
    // A bad field: refused, its bytes skipped too.
    c.write(rpcFrame({ t: 'put', rid: 3, object: { typename: 7 }, raw: [1000] }));
    c.write(pattern(1000, 3));
    expect(await c.request({ t: 'status', rid: 4 })).toMatchObject({ t: 'ok' });
    expect(c.frames.find((f) => f.rid === 3)).toMatchObject({ code: 'ERR_BAD_REQUEST' });
    // And a put that fits goes through on the same connection.
    c.write(rpcFrame({ t: 'put', rid: 5, object: { typename: 'Blob', meta: { tag: 'ok' } }, raw: [5] }));
    c.write(Uint8Array.from([1, 2, 3, 4, 5]));
    const ok = await c.waitFor((f) => f.rid === 5);
    expect(ok).toMatchObject({ t: 'ok' });
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    expect(Array.from(await r.getBlob(String(ok?.id)))).toEqual([1, 2, 3, 4, 5]);
    await r.delete(String(ok?.id));
    expect(usage()).toEqual(before);
  });

  it('a put whose bytes stop coming is aborted after the idle timeout', async () => {
    const rpc = await RpcServer.start(a.store, { host: '127.0.0.1', port: 0, token: TOKEN, idleTimeoutMs: 300 });
    try {
      const before = usage();
      const c = await RawConn.open(rpc.address());
      conns.push(c);
      c.write(helloFrame());
      expect(await c.waitFor((f) => f.rid === 1)).toMatchObject({ t: 'ok' });
      c.write(rpcFrame({ t: 'put', rid: 2, object: { typename: 'Blob' }, raw: [4 * MIB] }));
      c.write(pattern(MIB, 1));
      expect(await c.waitFor((f) => f.t === 'err')).toMatchObject({ rid: 0, code: 'ERR_TIMEOUT' });
      await c.closed;
      await eventually(() => a.store.status().memoryUsed === before.memoryUsed, 'memory given back');
      expect(usage()).toEqual(before);
    } finally {
      await rpc.close();
    }
  });

  it('a client that drops mid-get leaves nothing pinned', async () => {
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    const id = await r.putBlob(pattern(32 * MIB, 5));
    const before = usage();
    const c = await authed();
    c.write(rpcFrame({ t: 'get', rid: 2, ids: [id] }));
    // The get is in flight: its answer's header is here, announcing 32 MiB of raw bytes. Stop reading,
    // so the bytes back up in the server (more than loopback socket buffers hold).
    const head = await c.waitFor((f) => f.rid === 2);
    c.socket.pause();
    expect(head).toMatchObject({ t: 'ok', blobs: [id], raw: [32 * MIB] });
    // The get holds its pin while bytes are queued: a delete hides the blob but cannot free it yet.
    await r.delete(id);
    expect(usage().memoryUsed).toBe(before.memoryUsed);
    expect(c.socket.bytesRead).toBeLessThan(32 * MIB); // dropped mid-answer
    c.destroy();
    await eventually(() => usage().memoryUsed === before.memoryUsed - 32 * MIB, 'the dropped get lets go of the blob');
    expect(usage()).toEqual({
      ...before,
      memoryUsed: before.memoryUsed - 32 * MIB,
      blobs: before.blobs - 1,
      entries: before.entries - 1,
    });
  });
});
