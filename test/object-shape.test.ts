/**
 * Object shape limits (issue 8, defect 1): clients choose how members nest,
 * so the store bounds depth and tree size at creation (ERR_BAD_REQUEST,
 * nothing created) and walks trees without recursion. A chain at the cap
 * works for get, release, delete and disconnect, over IPC and RPC.
 */
import { connect, type StoreClient, type StoredObject } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_OBJECT_DEPTH, MAX_TREE_NODES } from '../dist/src/protocol/fields.js';
import { errCode } from './helpers/child.js';
import { type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';

/** A blob under `levels` objects, each the only member of the next; returns the ids, root last. */
async function chain(c: StoreClient, levels: number): Promise<string[]> {
  const ids = [await c.putBlob(new Uint8Array([1, 2, 3]))];
  for (let i = 0; i < levels; i++) ids.push(await c.putObject({ typename: 'Link', members: [ids[ids.length - 1]] }));
  return ids;
}

function depthOf(v: StoredObject): number {
  let d = 0;
  for (let o = v; o.members.length > 0 && !(o.members[0] instanceof Uint8Array); o = o.members[0] as StoredObject) d++;
  return d + 1;
}

describe.each(['ipc', 'rpc'] as const)('object shape limits over %s', (transport) => {
  let s: RpcStore;
  beforeAll(async () => {
    s = await startRpcStore('127.0.0.1', { size: 64 * 1024 * 1024 });
  });
  afterAll(async () => {
    await s?.stop();
  });
  const open = () => (transport === 'ipc' ? connect({ socket: s.socket }) : connect({ rpc: s.rpc, token: TOKEN }));

  it(`a chain ${MAX_OBJECT_DEPTH} deep works for get, release, delete; one more level is refused with nothing created`, async () => {
    await using c = await open();
    const ids = await chain(c, MAX_OBJECT_DEPTH);
    const root = ids[ids.length - 1];
    const entries = s.store.status().entries;

    expect(await errCode(c.putObject({ typename: 'Link', members: [root] }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(c.putObject({ typename: 'Link', members: [ids[0], root] }))).toBe('ERR_BAD_REQUEST');
    expect(s.store.status().entries).toBe(entries);

    const v = (await c.get(root)) as StoredObject;
    expect(depthOf(v)).toBe(MAX_OBJECT_DEPTH);
    await c.release(root);
    expect(await errCode(c.release(root))).toBe('ERR_NOT_REFERENCED');

    const freed = s.store.status().counters.freed;
    await c.delete(root);
    expect(s.store.status().counters.freed - freed).toBe(MAX_OBJECT_DEPTH + 1);
    expect(s.store.status().entries).toBe(entries - MAX_OBJECT_DEPTH - 1);
  });

  it('a client that disconnects while holding a chain at the cap leaves the store up, and delete frees it all', async () => {
    const holder = await open();
    const ids = await chain(holder, MAX_OBJECT_DEPTH);
    const root = ids[ids.length - 1];
    await holder.get(root);
    await holder.get(root);
    const entries = s.store.status().entries;
    await using other = await open();
    await other.delete(root);
    // Over IPC the holder's views pin the chain: deleted, hidden at once, freed on its last reference.
    // Over RPC a get is a copy, so nothing stays pinned once it is answered.
    expect(s.store.status().entries).toBe(transport === 'ipc' ? entries : entries - ids.length);
    await holder.close();
    const gone = async () => {
      for (let i = 0; i < 200 && s.store.status().entries !== entries - ids.length; i++) await other.status();
      return s.store.status().entries;
    };
    expect(await gone()).toBe(entries - ids.length);
    expect((await other.status()).memoryUsed).toBe(0);
  });

  it(`a diamond whose tree would hold more than ${MAX_TREE_NODES} records is refused before anything changes`, async () => {
    await using c = await open();
    // Each level lists the level below twice: 2^k records in a tree k levels deep.
    let level = await c.putBlob(new Uint8Array([7]));
    const made = [level];
    let records = 1;
    while (2 * records + 1 <= MAX_TREE_NODES) {
      level = await c.putObject({ typename: 'Pair', members: [level, level] });
      made.push(level);
      records = 2 * records + 1;
    }
    const entries = s.store.status().entries;
    expect(await errCode(c.putObject({ typename: 'Pair', members: [level, level] }))).toBe('ERR_BAD_REQUEST');
    expect(s.store.status().entries).toBe(entries);
    // The largest allowed one still reads and releases.
    const v = (await c.get(level)) as StoredObject;
    expect(v.members.length).toBe(2);
    await c.release(level);
    await c.delete(level);
    expect(s.store.status().entries).toBe(entries - made.length);
  });
});
