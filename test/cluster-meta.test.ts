/**
 * Three stores (child processes) on one real etcd started by the test: the
 * metadata side of the cluster — instances and leases, persist, names,
 * datasets, lost objects, and etcd restarts.
 */
import { randomUUID } from 'node:crypto';
import { connect, type Tensor, type TrellisClient } from 'trellis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { errCode, eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { spawnStore } from './helpers/store.js';

type Store = Awaited<ReturnType<typeof spawnStore>>;

describe('cluster metadata on a real etcd', () => {
  let etcd: EtcdHandle;
  let stores: Store[] = [];
  let clients: TrellisClient[] = [];
  let prefix = '';

  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd.stop();
  });

  beforeEach(async () => {
    prefix = `/trellis-test/${randomUUID()}`;
    stores = await Promise.all(
      ['a', 'b', 'c'].map((name) =>
        spawnStore(['--size', '64M', '--name', name, '--meta', etcd.url, '--meta-prefix', prefix, '--lease-ttl', '2']),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
  });

  afterEach(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(stores.map((s) => s.stop()));
  });

  const ids = async (c: TrellisClient) => (await c.instances()).map((i) => i.instanceId).sort();

  it('registers every store under a distinct instance id, and object ids differ per store', async () => {
    const [a, b, c] = clients;
    const st = await Promise.all(clients.map((x) => x.status()));
    const instanceIds = st.map((s) => s.instanceId);
    expect(new Set(instanceIds).size).toBe(3);
    expect(await ids(a)).toEqual([...instanceIds].sort());
    const infos = await b.instances();
    expect(infos.map((i) => i.name).sort()).toEqual(['a', 'b', 'c']);
    expect(infos.map((i) => i.memoryLimit)).toEqual([64 * 1024 * 1024, 64 * 1024 * 1024, 64 * 1024 * 1024]);
    const oa = await a.put(new Uint8Array([1]));
    const oc = await c.put(new Uint8Array([1]));
    expect(oa.slice(0, 5)).not.toBe(oc.slice(0, 5));
    expect(st[0].meta).toMatchObject({ backend: 'etcd', prefix });
  });

  it('persist on A is found from C; C gets ERR_OBJECT_REMOTE, not a hang', async () => {
    const [a, , c] = clients;
    const id = await a.put({ dtype: 'float32', shape: [256], data: new Float32Array(256).fill(1.5) });
    await a.persist(id);
    const aId = (await a.status()).instanceId;
    const found = await c.listGlobal({ typename: 'Tensor' });
    expect(found).toEqual([expect.objectContaining({ id, instanceId: aId, alive: true, nbytes: 1024 })]);
    expect(await errCode(c.get(id))).toBe('ERR_OBJECT_REMOTE');
    const loc = await c.locate(id);
    expect(loc.instances).toEqual([expect.objectContaining({ instanceId: aId, name: 'a', bytes: 1024, shards: [id] })]);
    // not persisted: invisible to others
    const hidden = await a.put(new Uint8Array([9]));
    expect(await errCode(c.get(hidden))).toBe('ERR_OBJECT_NOT_FOUND');
    // deleting on A withdraws it everywhere
    await a.delete(id);
    expect(await c.listGlobal({ typename: 'Tensor' })).toEqual([]);
  });

  it('a name put on B wakes a getName waiting on A; names are cluster-wide', async () => {
    const [a, b, c] = clients;
    const waiting = a.getName('fmnist/train', { wait: true, timeoutMs: 20_000 });
    await eventually(async () => (await a.status()).meta.nameWaiters === 1, 'the wait registers');
    const id = await b.put(new Int32Array([1, 2, 3]), { name: 'fmnist/train' });
    expect(await waiting).toBe(id);
    expect(await c.getName('fmnist/train')).toBe(id);
    expect(await errCode(c.putName('fmnist/train', await c.put(new Uint8Array(1))))).toBe('ERR_OBJECT_EXISTS');
    expect(await errCode(a.getName('never', { wait: true, timeoutMs: 300 }))).toBe('ERR_TIMEOUT');
    expect(await c.listNames('fmnist/')).toEqual({ 'fmnist/train': id });
    // the name's object was persisted with it, so A can read its record
    expect((await a.listGlobal()).map((o) => o.id)).toContain(id);
    await c.dropName('fmnist/train');
    expect(await errCode(c.getName('fmnist/train'))).toBe('ERR_NAME_NOT_FOUND');
    // other stores read names from a watch-fed cache: the drop reaches them with the watch event
    await eventually(
      async () => (await errCode(a.getName('fmnist/train'))) === 'ERR_NAME_NOT_FOUND',
      'A sees the drop',
    );
  });

  it('a dataset spans stores and locate says which store holds what', async () => {
    const [a, b, c] = clients;
    const shard = (n: number) => ({ dtype: 'uint8' as const, shape: [n], data: new Uint8Array(n).fill(n % 251) });
    const sa = [await a.put(shard(1000)), await a.put(shard(3000))];
    const sb = [await b.put(shard(5000), { persist: true })];
    const sc = [await c.put(shard(7000), { persist: true })];
    // A persists its own shards on the way; B's and C's are already persisted
    const ds = await a.createDataset('fmnist/shards', [...sa, ...sb, ...sc], { meta: { rows: 16000 } });
    expect(await b.getName('fmnist/shards')).toBe(ds);
    const loc = await c.locate('fmnist/shards');
    expect(loc).toMatchObject({ id: ds, typename: 'Dataset', nbytes: 16000 });
    const by = Object.fromEntries(loc.instances.map((i) => [i.name, { bytes: i.bytes, shards: i.shards }]));
    expect(by).toEqual({
      a: { bytes: 4000, shards: sa },
      b: { bytes: 5000, shards: sb },
      c: { bytes: 7000, shards: sc },
    });
    expect(loc.instances[0].name).toBe('c'); // most bytes first
    expect(await errCode(a.get(ds))).toBe('ERR_BAD_REQUEST');
    // a local shard read where it lives is a zero-copy view
    const t = (await b.get(sb[0])) as Tensor;
    expect(t.data[4999]).toBe(5000 % 251);
    expect(await errCode(a.createDataset(undefined, ['o00ff000000000001']))).toBe('ERR_OBJECT_NOT_FOUND');
    await b.delete(ds);
    expect(await errCode(c.locate('fmnist/shards'))).toBe('ERR_NAME_NOT_FOUND');
  });

  it('kill -9 of store B: its lease expires, it leaves the instance list, its objects are lost', async () => {
    const [a, b] = clients;
    const bInstance = (await b.status()).instanceId;
    const id = await b.put(new Float64Array(1000), { name: 'on-b' });
    expect(await errCode(a.get(id))).toBe('ERR_OBJECT_REMOTE');
    stores[1].child.kill('SIGKILL');
    await eventually(async () => !(await ids(a)).includes(bInstance), 'B leaves the instance list', 20_000);
    expect(await errCode(a.get(id))).toBe('ERR_OBJECT_LOST');
    expect(await errCode(a.migrate(id))).toBe('ERR_OBJECT_LOST');
    // the tensor and its data blob were both published, and both are lost now
    const recs = await a.listGlobal();
    expect(recs.map((r) => r.typename).sort()).toEqual(['Blob', 'Tensor']);
    expect(recs.map((r) => [r.instanceId, r.alive])).toEqual([
      [bInstance, false],
      [bInstance, false],
    ]);
    const loc = await a.locate('on-b');
    expect(loc.instances[0]).toMatchObject({ instanceId: bInstance, alive: false });
  });

  it('a store that stops cleanly deregisters at once', async () => {
    const [a] = clients;
    const cInstance = (await clients[2].status()).instanceId;
    await clients[2].close();
    await stores[2].stop();
    // revoked, not expired: the next listing no longer has it
    expect(await ids(a)).not.toContain(cInstance);
  });

  it.each([
    ['keeping its data', false],
    ['losing its data', true],
  ])(
    'after an etcd restart (%s) every store re-registers and its objects and names are visible again',
    async (_, fresh) => {
      const [a, b, c] = clients;
      const before = await ids(a);
      const ta = await a.put(new Uint8Array(100), { name: 'ta', persist: true });
      const tb = await b.put(new Uint8Array(200), { persist: true });
      const ds = await c.createDataset('ds', [ta, tb]);
      await etcd.restart({ fresh, downMs: 2500 });
      await eventually(
        async () => JSON.stringify(await ids(c)) === JSON.stringify(before),
        'all three registered',
        30_000,
      );
      const roots = async () => (await a.listGlobal()).filter((o) => o.typename !== 'Blob').length;
      await eventually(async () => (await roots()) === 3, 'objects published again', 30_000);
      // names are published right after the objects, by the store that bound them
      await eventually(async () => (await errCode(b.getName('ds'))) === 'no error', 'names published again', 30_000);
      await eventually(async () => (await errCode(b.getName('ta'))) === 'no error', 'names published again', 30_000);
      expect(await b.getName('ta')).toBe(ta);
      expect(await b.getName('ds')).toBe(ds);
      const loc = await a.locate('ds');
      expect(loc.instances.map((i) => i.bytes).sort()).toEqual([100, 200]);
      expect(loc.shards.map((s) => s.alive)).toEqual([true, true]);
      // a store started after the restart gets a new id, not one of the old ones
      const d = await spawnStore(['--size', '16M', '--meta', etcd.url, '--meta-prefix', prefix, '--lease-ttl', '2']);
      try {
        const dc = await connect({ socket: d.socket });
        expect(before).not.toContain((await dc.status()).instanceId);
        await dc.close();
      } finally {
        await d.stop();
      }
    },
  );
});
