/**
 * Replicated datasets on a real cluster: three `trellis store` processes on
 * 127.0.0.1/2/3 with RPC and one real etcd (lease TTL 2 s, repair scans
 * every 200 ms). Copies are made store to store over RPC; kill -9 takes a
 * store away with its memory, and its lease expiry is what the others see.
 */
import { createHash, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type RemoteClient, type StoredObject, type Tensor, type TrellisClient, writeShard } from 'trellis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RpcChannel } from '../dist/src/client/rpc-channel.js';
import { bytesOf, pattern } from './helpers/bytes.js';
import { errCode, eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

type Store = Awaited<ReturnType<typeof spawnStore>>;
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const ROWS = 4096;
const COLS = 64; // 1 MiB of float32 features per shard

const digest = (v: StoredObject) =>
  createHash('sha256')
    .update(Buffer.concat((v.members as Tensor[]).map((m) => bytesOf(m))))
    .digest('hex');

describe('replicated datasets (3 stores, etcd)', () => {
  let etcd: EtcdHandle;
  let tokenDir: ReturnType<typeof tempDir>;
  let tokenFile = '';
  let token = '';
  let stores: Store[] = [];
  let clients: TrellisClient[] = [];
  let remotes: RemoteClient[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    tokenDir = tempDir();
    tokenFile = join(tokenDir.dir, 'token');
    token = `${randomUUID()}${randomUUID()}`;
    writeFileSync(tokenFile, token, { mode: 0o600 });
  });
  afterAll(async () => {
    await etcd.stop();
    tokenDir.cleanup();
  });
  afterEach(async () => {
    await Promise.all([...clients, ...remotes].map((c) => c.close()));
    await Promise.all(stores.map((s) => s.stop()));
    remotes = [];
  });

  async function cluster(extra: string[] = [], perStore: string[][] = []): Promise<void> {
    const metaPrefix = `/trellis-test/${randomUUID()}`;
    stores = await Promise.all(
      HOSTS.map((host, i) =>
        spawnStore([
          ...clusterStoreArgs({ name: `node${i}`, size: '256M', etcdUrl: etcd.url, metaPrefix, host, tokenFile }),
          '--lease-ttl',
          '2',
          '--repair-interval',
          '200',
          ...extra,
          ...(perStore[i] ?? []),
        ]),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
  }

  /** Shard i written and persisted on the store of clients[owners[i]]; the dataset made by clients[0]. */
  async function dataset(name: string, owners: number[], replicas: number) {
    const ids: string[] = [];
    const digests: string[] = [];
    for (let s = 0; s < owners.length; s++) {
      const x = new Float32Array(pattern(ROWS * COLS * 4, s + 1).buffer);
      const y = pattern(ROWS, s + 100);
      const c = clients[owners[s]];
      const id = await writeShard(
        c,
        { dtype: 'float32', shape: [ROWS, COLS], data: x },
        { dtype: 'uint8', shape: [ROWS], data: y },
      );
      await c.persist(id);
      ids.push(id);
      digests.push(digest((await c.get(id)) as StoredObject));
      await c.release(id);
    }
    await clients[0].createDataset(name, ids, { replicas });
    return { ids, digests };
  }

  const liveCopies = async (c: TrellisClient, name: string) =>
    (await c.locate(name)).shards.map((s) =>
      s.replicas
        .filter((r) => r.alive)
        .map((r) => r.instanceId)
        .sort(),
    );

  /** Kills a store with SIGKILL and waits until the others no longer see it. */
  async function kill(...which: number[]): Promise<void> {
    const survivor = clients.find((_, i) => !which.includes(i))!;
    const gone = which.map((i) => clients[i].instanceId);
    for (const i of which) stores[i].child.kill('SIGKILL');
    await eventually(
      async () => (await survivor.instances()).every((i) => !gone.includes(i.instanceId)),
      'the killed stores leave the cluster',
    );
  }

  /** Shard objects each store holds (primaries and copies alike). */
  const shardCounts = (which: number[]) =>
    Promise.all(which.map(async (i) => (await clients[i].list({ typename: 'Shard' })).length));

  it('keeps two copies of every shard on distinct stores, the least loaded; locate lists both, primary first', async () => {
    await cluster();
    const { ids } = await dataset('ds', [0, 1, 2, 0, 1, 2], 2);
    const loc = await clients[1].locate('ds');
    const owners = [0, 1, 2, 0, 1, 2].map((o) => clients[o].instanceId);
    expect(
      loc.shards.map((s) => [
        s.id,
        s.replicas.length,
        s.replicas[0],
        new Set(s.replicas.map((r) => r.instanceId)).size,
      ]),
    ).toEqual(ids.map((id, i) => [id, 2, { id, instanceId: owners[i], alive: true }, 2]));
    const counts = await shardCounts([0, 1, 2]);
    expect(counts.reduce((a, b) => a + b)).toBe(12);
    const st = await Promise.all(clients.map((c) => c.status()));
    expect(st.reduce((a, s) => a + s.repair.replicasHere, 0)).toBe(6);
    // Each copy's record went out with its entry in the set (one transaction): every store sees it, on its holder.
    const copies = loc.shards.map((s) => s.replicas[1]);
    const published = await clients[0].listGlobal({ typename: 'Shard', limit: 1000 });
    expect(copies.map((c) => published.find((o) => o.id === c.id)?.instanceId)).toEqual(
      copies.map((c) => c.instanceId),
    );
    // The least loaded store by memory takes the copy: store 1 is nearly full, so store 2 gets it.
    const filler = await clients[1].createTensor('float32', [50 * 1024 * 1024]);
    await filler.seal();
    await eventually(
      async () =>
        (await clients[0].instances()).find((i) => i.instanceId === clients[1].instanceId)!.memoryUsed >
        200 * 1024 * 1024,
      'store 1 publishes its memory',
    );
    const id = await clients[0].put(new Float32Array(1024), { persist: true });
    await clients[0].persist(id, { replicas: 2 });
    expect((await clients[0].locate(id)).shards[0].replicas.map((r) => r.instanceId)).toEqual([
      clients[0].instanceId,
      clients[2].instanceId,
    ]);
  });

  it('a dataset with 2 replicas survives kill -9 of one store: every shard is readable byte-exact, then repaired to 2 live copies', async () => {
    await cluster();
    const { ids, digests } = await dataset('ds', [0, 1, 2, 0, 1, 2], 2);
    const dead = clients[2].instanceId;
    const hadCopyThere = (await liveCopies(clients[0], 'ds')).filter((c) => c.includes(dead)).length;
    await clients[2].close();
    await kill(2);
    // Read each shard over RPC from a store that holds a live copy, under the dataset's own shard id.
    const instances = await clients[0].instances();
    const loc = await clients[0].locate('ds');
    const read: string[] = [];
    for (const s of loc.shards) {
      const copy = s.replicas.find((r) => r.alive)!;
      const rpc = instances.find((i) => i.instanceId === copy.instanceId)!.rpc!;
      const remote = (await connect({ rpc: `${rpc.host}:${rpc.port}`, token })) as RemoteClient;
      remotes.push(remote);
      read.push(digest((await remote.get(s.id)) as StoredObject));
    }
    expect(read).toEqual(digests);
    // Repair: every shard back at two live copies, on the two survivors; no store made an extra one.
    const survivors = [clients[0].instanceId, clients[1].instanceId].sort();
    await eventually(
      async () => (await liveCopies(clients[0], 'ds')).every((c) => c.length === 2),
      'every shard is back at 2 live copies',
      30_000,
    );
    expect(await liveCopies(clients[1], 'ds')).toEqual(ids.map(() => survivors));
    expect(await shardCounts([0, 1])).toEqual([6, 6]);
    const st = await Promise.all([clients[0].status(), clients[1].status()]);
    expect(st.map((s) => s.repair.leader).filter(Boolean)).toEqual([true]);
    // The scans after the repair count nothing under-replicated (figures are those of each store's last scan).
    await eventually(
      async () =>
        (await Promise.all([clients[0].status(), clients[1].status()])).every((s) => s.repair.underReplicated === 0),
      'both stores see no object under-replicated',
    );
    expect(st.map((s) => [s.repair.lost, s.repair.bytesRepairing])).toEqual([
      [0, 0],
      [0, 0],
    ]);
    expect(st[0].repair.copiesMade + st[1].repair.copiesMade).toBe(hadCopyThere);
    // migrate of a shard returns the local copy wherever one is: 0 bytes move.
    const bytesIn = async () =>
      ((await clients[0].status()).rpc?.migration as { bytesIn?: number } | undefined)?.bytesIn;
    const moved = await bytesIn();
    for (const id of ids) await clients[0].migrate(id);
    expect(await bytesIn()).toBe(moved);
  });

  it('two stores lost at once with factor 2: ERR_OBJECT_LOST for the shards that had both copies there, and no others', async () => {
    await cluster();
    const { ids, digests } = await dataset('ds', [1, 1, 2, 2, 0, 0, 1, 2], 2);
    const gone = [clients[1].instanceId, clients[2].instanceId];
    const copies = await liveCopies(clients[0], 'ds');
    const lost = ids.filter((_, i) => copies[i].every((c) => gone.includes(c)));
    expect(lost.length).toBeGreaterThan(0);
    expect(lost.length).toBeLessThan(ids.length);
    await Promise.all([clients[1].close(), clients[2].close()]);
    await kill(1, 2);
    const c = clients[0];
    const outcome: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const code = await errCode(c.migrate(ids[i]));
      if (code !== 'no error') {
        outcome.push(code);
        continue;
      }
      const local = await c.migrate(ids[i]);
      outcome.push(digest((await c.get(local)) as StoredObject) === digests[i] ? 'intact' : 'corrupt');
      await c.release(local);
    }
    expect(outcome).toEqual(ids.map((id) => (lost.includes(id) ? 'ERR_OBJECT_LOST' : 'intact')));
    expect(await errCode(c.get(lost[0]))).toBe('ERR_OBJECT_LOST');
    // One store left: the rest cannot get back to two copies, and status says so.
    await eventually(async () => (await c.status()).repair.lost === lost.length, 'lost objects are counted');
    const r = (await c.status()).repair;
    expect([r.underReplicated, r.lost]).toEqual([ids.length - lost.length, lost.length]);
  });

  it('deleting a replicated object deletes every copy, from the primary or from a store holding a copy', async () => {
    await cluster();
    const { ids } = await dataset('ds', [0, 0], 3);
    expect(await shardCounts([0, 1, 2])).toEqual([2, 2, 2]);
    const before = await Promise.all(clients.map(async (c) => (await c.status()).memoryUsed));
    await clients[0].delete(ids[0]); // the primary's store
    await clients[1].delete(ids[1]); // a store that holds a copy
    expect(await shardCounts([0, 1, 2])).toEqual([0, 0, 0]);
    const after = await Promise.all(clients.map(async (c) => (await c.status()).memoryUsed));
    expect(after.map((a, i) => before[i] - a)).toEqual(before.map(() => 2 * (ROWS * COLS * 4 + 4096)));
    for (const id of ids) expect(await errCode(clients[2].locate(id))).toBe('ERR_OBJECT_NOT_FOUND');
    expect((await clients[2].listGlobal({ typename: 'Shard' })).map((o) => o.id)).toEqual([]);
  });

  it('asks for no more copies than there are stores with room: ERR_REPLICAS_UNAVAILABLE; a bad factor is ERR_BAD_REQUEST', async () => {
    await cluster();
    const id = await clients[0].put(new Float32Array(1024), { persist: true });
    expect(await errCode(clients[0].persist(id, { replicas: 4 }))).toBe('ERR_REPLICAS_UNAVAILABLE');
    expect(await errCode(clients[0].persist(id, { replicas: 0 }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(clients[0].persist(id, { replicas: 65 }))).toBe('ERR_BAD_REQUEST');
    // A copy larger than any other store's free memory has nowhere to go.
    const big = await clients[0].createTensor('float32', [50 * 1024 * 1024]);
    const bigId = await big.seal({ persist: true });
    await clients[0].release(bigId).catch(() => {});
    const fill1 = await clients[1].createTensor('float32', [50 * 1024 * 1024]);
    const fill2 = await clients[2].createTensor('float32', [50 * 1024 * 1024]);
    await Promise.all([fill1.seal(), fill2.seal()]);
    await eventually(
      async () => (await clients[0].instances()).every((i) => i.memoryUsed >= 200 * 1024 * 1024),
      'the stores publish their memory',
    );
    expect(await errCode(clients[0].persist(bigId, { replicas: 2 }))).toBe('ERR_REPLICAS_UNAVAILABLE');
  });

  it('a local copy of an under-replicated object is spilled last, after younger unreplicated objects', async () => {
    const spill = tempDir('trellis-spill-');
    try {
      // Store 2 is too small to take a copy, so once store 1 dies the object stays under-replicated.
      await cluster([], [['--size', '8M', '--segment-size', '8M', '--spill-dir', spill.dir], [], ['--size', '1M']]);
      const c = clients[0];
      const x = await c.putBlob(pattern(3 * 1024 * 1024, 1), { persist: true });
      await c.persist(x, { replicas: 2 });
      expect((await c.locate(x)).shards[0].replicas.map((r) => r.instanceId)).toEqual([
        clients[0].instanceId,
        clients[1].instanceId,
      ]);
      await clients[1].close();
      await kill(1);
      await eventually(async () => (await c.status()).repair.underReplicated === 1, 'x is seen under-replicated');
      const y = await c.putBlob(pattern(3 * 1024 * 1024, 2));
      // No room for a third: one blob must go to disk. x is the least recently used, but it is the last copy left.
      await c.putBlob(pattern(3 * 1024 * 1024, 3));
      const spilled = (await c.list({ typename: 'Blob' })).filter((o) => o.spilled).map((o) => o.id);
      expect(spilled).toEqual([y]);
    } finally {
      spill.cleanup();
    }
  });

  it('two stores asked at once for the one missing copy: one adds it, the other deletes its own again', async () => {
    await cluster(['--repair-interval', '600000']); // no repair in the way
    const id = await clients[0].put(new Float32Array(pattern(4 * 1024 * 1024, 7).buffer), { persist: true });
    await clients[0].persist(id, { replicas: 2 });
    const [copy] = (await clients[0].locate(id)).shards[0].replicas.filter((r) => r.id !== id);
    const holder = clients.findIndex((c) => c.instanceId === copy.instanceId);
    await clients[holder].delete(copy.id);
    expect((await clients[0].locate(id)).shards[0].replicas.length).toBe(1);
    const instances = await clients[0].instances();
    const ask = async (i: number) => {
      const rpc = instances.find((x) => x.instanceId === clients[i].instanceId)!.rpc!;
      const ch = await RpcChannel.open({ ...rpc, token });
      try {
        const a = await ch.request({ t: 'replicate', id, from: { id, instanceId: clients[0].instanceId } });
        return a.header.added;
      } finally {
        ch.close();
      }
    };
    const added = await Promise.all([ask(1), ask(2)]);
    expect(added.sort()).toEqual([false, true]);
    const replicas = (await clients[0].locate(id)).shards[0].replicas;
    expect(replicas.length).toBe(2);
    const tensors = await Promise.all([1, 2].map(async (i) => (await clients[i].list({ typename: 'Tensor' })).length));
    expect(tensors.sort()).toEqual([0, 1]);
  });
});
