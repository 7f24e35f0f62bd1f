/**
 * Migration, server to server over RPC: stores on 127.0.0.1 and 127.0.0.2
 * (in this process, each with its own socket and arena, talking real TCP),
 * and a source store in a child process killed mid-transfer. Checks bytes,
 * structure, coalescing, memory accounting, and that a failed transfer
 * leaves nothing half-made on either side.
 */
import { readFileSync } from 'node:fs';
import * as arrow from 'apache-arrow';
import { connect, type StoredObject, type Tensor } from 'trellis';
import { migrateFrom, migratorOf } from 'trellis/store';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../dist/src/native.js';
import { bytesMismatch, elementMismatch, pattern } from './helpers/bytes.js';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { MIB, type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';
import { tempDir } from './helpers/store.js';

/** The line of /proc/self/maps that holds the buffer's memory. */
function mappingOf(buf: ArrayBufferLike): string | undefined {
  const addr = native.address(buf as ArrayBuffer);
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .find((l) => {
      const [lo, hi] = l
        .split(' ')[0]
        .split('-')
        .map((h) => BigInt(`0x${h}`));
      return addr >= lo && addr < hi;
    });
}

function usage(s: RpcStore) {
  const st = s.store.status();
  return { memoryUsed: st.memoryUsed, objects: st.objects, blobs: st.blobs, entries: st.entries };
}

describe('migration between two stores', () => {
  let a: RpcStore;
  let b: RpcStore;
  beforeAll(async () => {
    a = await startRpcStore('127.0.0.1', { instanceId: 1, size: 400 * MIB });
    b = await startRpcStore('127.0.0.2', { instanceId: 2, size: 400 * MIB });
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
  });

  it('moves 256 MiB from A to B byte-exact; B reads its copy through IPC with no copy', async () => {
    const size = 256 * MIB;
    const want = pattern(size, 1);
    let id: string;
    {
      await using ipcA = await connect({ socket: a.socket });
      const w = await ipcA.createTensor('uint8', [size]);
      w.data.set(want);
      id = await w.seal();
    }
    const bBefore = usage(b);
    const outBefore = (a.store.status().rpc as unknown as { bytesOut: number }).bytesOut;
    const local = await migrateFrom(b.store, a.endpoint, TOKEN, id, { localAddress: '127.0.0.2' });
    expect(local).not.toBe(id);
    expect(local).toMatch(/^o0002/);

    const bAfter = usage(b);
    expect(bAfter.memoryUsed - bBefore.memoryUsed).toBe(size);
    expect(bAfter.objects - bBefore.objects).toBe(1);
    expect(bAfter.blobs - bBefore.blobs).toBe(1);
    expect(migratorOf(b.store).stats()).toMatchObject({ migrations: 1, blobsIn: 1, objectsIn: 1, bytesIn: size });
    const st = b.store.status();
    expect((st.rpc as unknown as { migration: { bytesIn: number } }).migration.bytesIn).toBe(size);
    expect((a.store.status().rpc as unknown as { bytesOut: number }).bytesOut - outBefore).toBe(size);

    await using ipcB = await connect({ socket: b.socket });
    const t = (await ipcB.get(local)) as Tensor;
    expect(t.dtype).toBe('uint8');
    expect(t.shape).toEqual([size]);
    expect(bytesMismatch(t.data, want)).toBeNull();
    // A view over B's shared memory, mapped read-only into this client: not a copy.
    const line = mappingOf(t.data.buffer);
    expect(line).toContain('memfd:trellis');
    expect(line?.split(/\s+/)[1]).toBe('r--s');
    await ipcB.release(local);

    // A kept its object and holds no pin for the transfer: deleting it frees its memory at once.
    const aUsed = a.store.status().memoryUsed;
    await using ipcA = await connect({ socket: a.socket });
    await ipcA.delete(id);
    expect(a.store.status().memoryUsed).toBe(aUsed - size);
    await ipcB.delete(local);
  });

  it('recreates composites with the same typenames, metadata and member structure', async () => {
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    const table = arrow.tableFromArrays({
      k: Int32Array.from({ length: 1000 }, (_, i) => i),
      s: Array.from({ length: 1000 }, (_, i) => `v${i}`),
    });
    const tensorId = await r.put({ dtype: 'float32', shape: [16, 16], data: new Float32Array(256).fill(0.5) });
    const tableId = await r.put(table);
    const blobId = await r.putBlob(pattern(3 * MIB + 1, 9));
    const inner = await r.putObject({ typename: 'Inner', meta: { level: 2 }, members: [tableId, blobId] });
    const root = await r.putObject({
      typename: 'Outer',
      meta: { name: 'shards', list: [1, 2, 3] },
      members: [tensorId, inner, blobId],
    });

    const local = await migrateFrom(b.store, a.endpoint, TOKEN, root);
    await using ipcB = await connect({ socket: b.socket });
    const v = (await ipcB.get(local)) as StoredObject;
    expect(v).toMatchObject({ typename: 'Outer', meta: { name: 'shards', list: [1, 2, 3] } });
    const original = (await r.get(root)) as StoredObject;
    expect(v.nbytes).toBe(original.nbytes);
    const [t, innerV, blob] = v.members as [Tensor, StoredObject, Uint8Array];
    expect(t.shape).toEqual([16, 16]);
    expect(elementMismatch(t.data as Float32Array, new Float32Array(t.data.length).fill(0.5))).toBeNull();
    expect(innerV).toMatchObject({ typename: 'Inner', meta: { level: 2 } });
    const tb = innerV.members[0] as arrow.Table;
    expect(tb.toArray().map((x) => x.toJSON())).toEqual(table.toArray().map((x) => x.toJSON()));
    expect(bytesMismatch(innerV.members[1] as Uint8Array, pattern(3 * MIB + 1, 9))).toBeNull();
    // The blob listed twice is one blob here too.
    expect(bytesMismatch(blob, pattern(3 * MIB + 1, 9))).toBeNull();
    const listed = (await ipcB.list()).find((o) => o.id === local);
    expect(listed?.members).toHaveLength(3);
    expect(listed?.members[2]).toBe((await ipcB.list()).find((o) => o.typename === 'Inner')?.members[1]);
    await ipcB.release(local);
    await ipcB.delete(local);
  });

  it('concurrent migrations of one object make one transfer; later ones return the copy while it exists', async () => {
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    const size = 32 * MIB;
    const id = await r.putBlob(pattern(size, 3));
    const before = migratorOf(b.store).stats();
    const outBefore = (a.store.status().rpc as unknown as { bytesOut: number }).bytesOut;
    const usedBefore = b.store.status().memoryUsed;
    const ids = await Promise.all(Array.from({ length: 5 }, () => migrateFrom(b.store, a.endpoint, TOKEN, id)));
    expect(new Set(ids).size).toBe(1);
    let s = migratorOf(b.store).stats();
    expect(s.migrations - before.migrations).toBe(1);
    expect(s.coalesced - before.coalesced).toBe(4);
    expect(s.bytesIn - before.bytesIn).toBe(size);
    expect((a.store.status().rpc as unknown as { bytesOut: number }).bytesOut - outBefore).toBe(size);
    expect(b.store.status().memoryUsed - usedBefore).toBe(size);

    // Asked again later: the copy made before (no transfer).
    expect(await migrateFrom(b.store, a.endpoint, TOKEN, id)).toBe(ids[0]);
    s = migratorOf(b.store).stats();
    expect(s.reused - before.reused).toBe(1);
    expect(s.bytesIn - before.bytesIn).toBe(size);

    // Once the copy is deleted, a migration makes a new one.
    await using ipcB = await connect({ socket: b.socket });
    await ipcB.delete(ids[0]);
    const again = await migrateFrom(b.store, a.endpoint, TOKEN, id);
    expect(again).not.toBe(ids[0]);
    expect(bytesMismatch(await ipcB.getBlob(again), pattern(size, 3))).toBeNull();
    await ipcB.release(again);
    await ipcB.delete(again);
  });

  it('the store wires migration to its cluster layer when it serves RPC', async () => {
    await using r = await connect({ rpc: a.rpc, token: TOKEN });
    const id = await r.put(Int32Array.from([5, 6, 7]));
    const migration = b.store.cluster.migration;
    expect(migration).not.toBeNull();
    const local = await migration!.pull(a.endpoint, id);
    await using ipcB = await connect({ socket: b.socket });
    expect(Array.from(((await ipcB.get(local)) as Tensor).data as Int32Array)).toEqual([5, 6, 7]);
    await ipcB.release(local);
    await ipcB.delete(local);
  });

  it('failures come with their codes and leave nothing behind', async () => {
    const before = usage(b);
    const failed = migratorOf(b.store).stats().failed;
    expect(await errCode(migrateFrom(b.store, a.endpoint, TOKEN, 'o0001ffffffffffff'))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(migrateFrom(b.store, a.endpoint, 'wrong-token-xxxxxxxx', 'o0001000000000001'))).toBe(
      'ERR_UNAUTHORIZED',
    );
    expect(await errCode(migrateFrom(b.store, a.endpoint, TOKEN, 'not-an-id'))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(migrateFrom(b.store, { host: '127.0.0.1', port: 1 }, TOKEN, 'o0001000000000001'))).toBe(
      'ERR_DISCONNECTED',
    );
    expect(migratorOf(b.store).stats().failed - failed).toBe(3);
    expect(usage(b)).toEqual(before);
  });

  it('a destination without room fails with ERR_OUT_OF_MEMORY, keeps nothing, and the source unpins', async () => {
    const small = await startRpcStore('127.0.0.2', { size: 32 * MIB });
    try {
      await using r = await connect({ rpc: a.rpc, token: TOKEN });
      const size = 48 * MIB;
      const id = await r.putBlob(pattern(size, 4));
      // Others' connections to A (r, and B's kept from earlier tests) stay; the small store's must go.
      const connections = a.store.status().rpc?.connections;
      expect(await errCode(migrateFrom(small.store, a.endpoint, TOKEN, id))).toBe('ERR_OUT_OF_MEMORY');
      expect(usage(small)).toEqual({ memoryUsed: 0, objects: 0, blobs: 0, entries: 0 });
      // A's pin for the refused transfer goes with its connection, which a failed transfer does not keep.
      await eventually(
        () => (a.store.status().rpc?.connections ?? 0) <= connections!,
        'the migration connection closed',
      );
      expect(migratorOf(small.store).stats().peers).toEqual({ opened: 1, reused: 0, retried: 0, open: 0 });
      const used = a.store.status().memoryUsed;
      await r.delete(id);
      expect(a.store.status().memoryUsed).toBe(used - size);
    } finally {
      await small.stop();
    }
  });
});

describe('a source store killed mid-transfer', () => {
  let b: RpcStore;
  const dirs: (() => void)[] = [];
  beforeAll(async () => {
    b = await startRpcStore('127.0.0.2', { instanceId: 2, size: 600 * MIB });
  });
  afterEach(async () => {
    await killChildren();
    for (const d of dirs.splice(0)) d();
  });
  afterAll(async () => {
    await b?.stop();
  });

  /** A store on 127.0.0.1 in a child process, holding one tensor of `size` bytes. */
  async function source(size: number) {
    const { dir, cleanup } = tempDir('trellis-src-');
    dirs.push(cleanup);
    const child = startChild(`
      const { StoreServer, startRpc } = trellis;
      const socket = ${JSON.stringify(`${dir}/store.sock`)};
      const store = await StoreServer.start(
        { socket, size: ${size + 64 * MIB}, rpcPort: 0, rpcHost: '127.0.0.1', token: ${JSON.stringify(TOKEN)}, instanceId: 7 },
        startRpc,
      );
      const c = await connect({ socket });
      const w = await c.createTensor('uint8', [${size}]);
      w.data.fill(7);
      send({ endpoint: store.rpcAddress, id: await w.seal() });
      await command();
    `);
    const r = (await child.next(60_000)) as { endpoint: { host: string; port: number }; id: string };
    return { child, ...r };
  }

  /** Stops the source once bytes flow, checks the transfer is midway, then kills it. */
  async function killMidway(pid: number, size: number, received: () => number): Promise<void> {
    await eventually(() => received() > 0, 'bytes arriving', 30_000);
    process.kill(pid, 'SIGSTOP');
    expect(received()).toBeLessThan(size);
    process.kill(pid, 'SIGKILL');
  }

  it('migration fails with ERR_DISCONNECTED and the destination keeps no partial object', async () => {
    const size = 512 * MIB;
    const { child, endpoint, id } = await source(size);
    const before = usage(b);
    const failed = migratorOf(b.store).stats().failed;
    const p = migrateFrom(b.store, endpoint, TOKEN, id);
    p.catch(() => {});
    await killMidway(child.pid, size, () => migratorOf(b.store).stats().receiving);
    expect(await errCode(p)).toBe('ERR_DISCONNECTED');
    expect(await child.exited).toMatchObject({ signal: 'SIGKILL' });
    expect(usage(b)).toEqual(before);
    expect(migratorOf(b.store).stats()).toMatchObject({ active: 0, receiving: 0, failed: failed + 1 });
    await using ipcB = await connect({ socket: b.socket });
    expect((await ipcB.list()).filter((o) => o.nbytes === size)).toEqual([]);
  });

  it('an RPC get fails with ERR_DISCONNECTED when its store dies mid-answer', async () => {
    const size = 512 * MIB;
    const { child, endpoint, id } = await source(size);
    const r = await connect({ rpc: `${endpoint.host}:${endpoint.port}`, token: TOKEN, idleTimeoutMs: 30_000 });
    const channel = (r as unknown as { channel: { bytesReceived: number } }).channel;
    const p = r.get(id);
    p.catch(() => {});
    await killMidway(child.pid, size, () => channel.bytesReceived);
    expect(await errCode(p)).toBe('ERR_DISCONNECTED');
    expect(await errCode(r.status())).toBe('ERR_DISCONNECTED');
    await r.close();
  });
});
