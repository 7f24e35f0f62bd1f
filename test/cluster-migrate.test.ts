/**
 * The whole cluster path: three stores on 127.0.0.1/2/3 with RPC and one real
 * etcd. A client asks its own store to migrate an object persisted elsewhere;
 * the store finds the owner through etcd and pulls the bytes over RPC.
 */
import { createHash, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Tensor, type TrellisClient } from 'trellis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { errCode, eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

type Store = Awaited<ReturnType<typeof spawnStore>>;
const MiB = 1024 * 1024;
const sha = (a: ArrayBufferView) =>
  createHash('sha256')
    .update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
    .digest('hex');

describe('migration through the cluster (etcd + RPC)', () => {
  let etcd: EtcdHandle;
  let tokenDir: ReturnType<typeof tempDir>;
  let tokenFile = '';
  let stores: Store[] = [];
  let clients: TrellisClient[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    tokenDir = tempDir();
    tokenFile = join(tokenDir.dir, 'token');
    writeFileSync(tokenFile, `${randomUUID()}${randomUUID()}`, { mode: 0o600 });
  });
  afterAll(async () => {
    await etcd.stop();
    tokenDir.cleanup();
  });
  beforeEach(async () => {
    const prefix = `/trellis-test/${randomUUID()}`;
    stores = await Promise.all(
      ['127.0.0.1', '127.0.0.2', '127.0.0.3'].map((host, i) =>
        spawnStore([
          ...clusterStoreArgs({
            name: `node${i}`,
            size: '640M',
            etcdUrl: etcd.url,
            metaPrefix: prefix,
            host,
            tokenFile,
          }),
          '--lease-ttl',
          '2',
        ]),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
  });
  afterEach(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(stores.map((s) => s.stop()));
  });

  it('each store publishes its own RPC endpoint', async () => {
    const infos = await clients[0].instances();
    expect(infos.map((i) => i.rpc?.host).sort()).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    expect(infos.filter((i) => !Number.isInteger(i.rpc?.port) || i.rpc!.port <= 0)).toEqual([]);
  });

  it('migrates 256 MiB from A to B byte-exact; B then reads it zero-copy; bytes moved are counted', async () => {
    const [a, b, c] = clients;
    const w = await a.createTensor('float32', [64 * MiB]);
    for (let i = 0; i < w.data.length; i += 1024) w.data[i] = i;
    const id = await w.seal({ name: 'big', persist: true });
    const want = sha(((await a.get(id)) as Tensor).data);
    expect(await errCode(b.get(id))).toBe('ERR_OBJECT_REMOTE');
    const [l1, l2] = await Promise.all([b.migrate(await b.getName('big')), b.migrate(id)]); // coalesce
    expect(l1).toBe(l2);
    expect(l1).not.toBe(id);
    const t = (await b.get(l1)) as Tensor;
    expect(t.shape).toEqual([64 * MiB]);
    expect(sha(t.data)).toBe(want);
    const st = await b.status();
    expect(st.memoryUsed).toBeGreaterThanOrEqual(256 * MiB);
    const migration = (st.rpc as unknown as { migration: { bytesIn: number; migrations: number } }).migration;
    expect(migration.bytesIn).toBe(256 * MiB);
    expect(migration.migrations).toBe(1);
    // asking again returns the copy already here, and the remote id points to it
    expect(await b.migrate(id)).toBe(l1);
    await expect(b.get(id)).rejects.toMatchObject({
      code: 'ERR_OBJECT_REMOTE',
      message: expect.stringContaining(`its copy here is ${l1}`),
    });
    // C never asked: nothing moved there
    expect((await c.status()).memoryUsed).toBe(0);
  });

  it('a dataset located across stores can be gathered onto one node by migrating its shards', async () => {
    const [a, b, c] = clients;
    const shardOn = async (cl: TrellisClient, v: number) => cl.put(new Int32Array(1000).fill(v), { persist: true });
    const shards = [await shardOn(a, 1), await shardOn(b, 2), await shardOn(c, 3)];
    await a.createDataset('ds', shards);
    const loc = await c.locate('ds');
    const mine = (await c.status()).instanceId;
    const local: string[] = [];
    for (const s of loc.shards) local.push(s.instanceId === mine ? s.id : await c.migrate(s.id));
    const sums = (await c.getMany(local)).map((t) =>
      Array.from((t as Tensor).data as Int32Array).reduce((x, y) => x + y),
    );
    expect(sums).toEqual([1000, 2000, 3000]);
  });

  it('migrating from a store killed with SIGKILL fails with ERR_OBJECT_LOST once its lease expires', async () => {
    const [a, b] = clients;
    const id = await a.put(new Uint8Array(4096).fill(9), { persist: true });
    stores[0].child.kill('SIGKILL');
    await eventually(async () => (await errCode(b.migrate(id))) === 'ERR_OBJECT_LOST', 'the object is lost', 20_000);
    expect((await b.status()).memoryUsed).toBe(0); // nothing half-made
  });
});
