/**
 * `trellis rm` of a dataset in a cluster deletes its shards wherever their
 * copies are: two real stores with RPC on 127.0.0.1/.2 and a real etcd.
 * A replicated shard goes with every copy, whichever store holds its
 * primary; an unreplicated shard on the other store is kept and reported
 * (a store deletes only its own objects and those with a replica set).
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TrellisClient } from '../dist/src/index.js';
import { eventually } from './helpers/child.js';
import { trellis } from './helpers/cli.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

let etcd: EtcdHandle;
const dir = tempDir();
let stores: Awaited<ReturnType<typeof spawnStore>>[] = [];
let clients: TrellisClient[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  const tokenFile = join(dir.dir, 'token');
  writeFileSync(tokenFile, `${randomUUID()}${randomUUID()}`, { mode: 0o600 });
  const metaPrefix = `/trellis-test/${randomUUID()}`;
  stores = await Promise.all(
    ['127.0.0.1', '127.0.0.2'].map((host, i) =>
      spawnStore(clusterStoreArgs({ name: `node${i}`, size: '64M', etcdUrl: etcd.url, metaPrefix, host, tokenFile })),
    ),
  );
  clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(stores.map((s) => s.stop()));
  await etcd?.stop();
  dir.cleanup();
});

const entries = () => Promise.all(clients.map(async (c) => (await c.status()).entries));

/** A persisted shard-sized tensor written on store `i`. */
async function shardOn(i: number, value: number): Promise<string> {
  const id = await clients[i].put(new Float32Array(1024).fill(value));
  await clients[i].persist(id);
  return id;
}

describe('trellis rm of a dataset across stores', () => {
  it('deletes every copy of its replicated shards, whichever store holds the primary', async () => {
    const before = await entries();
    // Primaries on both stores; with 2 replicas each shard has a copy on each store.
    const ids = [await shardOn(0, 1), await shardOn(1, 2), await shardOn(0, 3), await shardOn(1, 4)];
    await clients[0].createDataset('rep/ds', ids, { replicas: 2 });
    const copies = (await clients[0].locate('rep/ds')).shards.map((s) => s.replicas.length);
    expect(copies).toEqual([2, 2, 2, 2]);

    const rm = await trellis(['rm', '--socket', stores[0].socket, 'rep/ds', '--json']);
    const dsId = JSON.parse(rm.stdout)[0]?.id;
    expect([rm.code, JSON.parse(rm.stdout)]).toEqual([0, [{ name: 'rep/ds', id: dsId, shards: 4 }]]);
    await eventually(async () => JSON.stringify(await entries()) === JSON.stringify(before), 'every copy deleted');
    expect(await entries()).toEqual(before);
    expect(await clients[1].listNames('rep/')).toEqual({});
  });

  it('keeps, and says so, the unreplicated shards on the other store', async () => {
    const before = await entries();
    const ids = [await shardOn(0, 5), await shardOn(1, 6)];
    await clients[0].createDataset('plain/ds', ids);
    const rm = await trellis(['rm', '--socket', stores[0].socket, 'plain/ds']);
    expect(rm).toEqual({
      code: 0,
      stdout: expect.stringMatching(
        /^removed plain\/ds o[0-9a-f]{16} and its 1 shards; 1 shards on other stores kept \(not replicated: rm them there\)\n$/,
      ),
      stderr: '',
    });
    // Store 0's shard went; store 1's is there until deleted on store 1.
    expect(await entries()).toEqual([before[0], before[1] + 2]); // a Tensor and its Blob
    await clients[1].delete(ids[1]);
    expect(await entries()).toEqual(before);
  });
});
