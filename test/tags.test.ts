/**
 * Store-local tags and the RPC read that waits for one (src/store/tags.ts,
 * docs/PROTOCOL.md "read"): two in-process stores on 127.0.0.1 and .2, an
 * IPC writer on one, an RPC reader on the other's side, real TCP.
 */
import { connect, type RemoteClient, type TrellisClient } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errCode, eventually } from './helpers/child.js';
import { type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';

describe('tags and ranged reads over RPC', () => {
  let a: RpcStore;
  let ipc: TrellisClient;
  let rpc: RemoteClient;
  beforeAll(async () => {
    a = await startRpcStore('127.0.0.1', { instanceId: 5 });
    ipc = await connect({ socket: a.socket });
    rpc = (await connect({ rpc: a.rpc, token: TOKEN })) as RemoteClient;
  });
  afterAll(async () => {
    await rpc?.close();
    await ipc?.close();
    await a?.stop();
  });

  const counts = () => {
    const s = a.store.status();
    return { entries: s.entries, tags: s.tags, tagWaiters: s.tagWaiters };
  };

  async function tagged(tag: string, bytes: number[], opts: { reads?: number; tensor?: boolean } = {}) {
    if (opts.tensor) {
      const w = await ipc.createTensor('uint8', [bytes.length]);
      w.data.set(bytes);
      return w.seal({ tag, reads: opts.reads });
    }
    const w = await ipc.createBlob(bytes.length);
    w.buffer.set(bytes);
    return w.seal({ tag, reads: opts.reads });
  }

  it('reads a byte range of a tagged blob or tensor straight into the buffer given', async () => {
    const before = counts();
    const blob = await tagged('t/blob', [1, 2, 3, 4, 5, 6, 7, 8]);
    const tensor = await tagged('t/tensor', [9, 8, 7, 6], { tensor: true });
    const into = new Uint8Array(3);
    expect(await rpc.read('t/blob', into, { offset: 2 })).toEqual({ id: blob, nbytes: 8 });
    expect([...into]).toEqual([3, 4, 5]);
    const whole = new Uint8Array(4);
    expect(await rpc.read('t/tensor', whole)).toEqual({ id: tensor, nbytes: 4 });
    expect([...whole]).toEqual([9, 8, 7, 6]);
    expect(await errCode(rpc.read('t/blob', new Uint8Array(4), { offset: 6 }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(rpc.read('t/none', into))).toBe('ERR_NAME_NOT_FOUND');
    await ipc.delete([blob, tensor]);
    // Deleting the objects drops their tags.
    expect(counts()).toEqual(before);
    expect(await errCode(rpc.read('t/blob', into))).toBe('ERR_NAME_NOT_FOUND');
  });

  it('a read with wait is answered when the tag is bound, or ERR_TIMEOUT', async () => {
    const into = new Uint8Array(2);
    const parked = rpc.read('t/later', into, { wait: true, timeoutMs: 30_000 });
    await eventually(() => counts().tagWaiters === 1, 'the read waits in the store');
    const id = await tagged('t/later', [42, 43]);
    expect(await parked).toEqual({ id, nbytes: 2 });
    expect([...into]).toEqual([42, 43]);
    expect(await errCode(rpc.read('t/never', into, { wait: true, timeoutMs: 20 }))).toBe('ERR_TIMEOUT');
    expect(counts().tagWaiters).toBe(0);
    await ipc.delete(id);
  });

  it('an object tagged with reads: n is deleted after its n-th complete read', async () => {
    const before = counts();
    await tagged('t/twice', [1, 2, 3, 4], { reads: 2 });
    const into = new Uint8Array(2);
    await rpc.read('t/twice', into);
    expect(counts()).toEqual({ ...before, entries: before.entries + 1, tags: before.tags + 1 });
    await rpc.read('t/twice', into, { offset: 2 });
    await eventually(() => counts().entries === before.entries, 'the last read deletes the object');
    expect(counts()).toEqual(before);
    expect(await errCode(rpc.read('t/twice', into))).toBe('ERR_NAME_NOT_FOUND');
  });

  it('a taken tag is refused before the seal (the blob stays unsealed), and reads needs a tag', async () => {
    const id = await tagged('t/taken', [1]);
    const w = await ipc.createBlob(1);
    expect(await errCode(w.seal({ tag: 't/taken' }))).toBe('ERR_OBJECT_EXISTS');
    expect(await errCode(w.seal({ reads: 1 }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(w.seal({ tag: 't/zero', reads: 0 }))).toBe('ERR_BAD_REQUEST');
    await w.abort();
    await ipc.delete(id);
  });

  it('a scope ends with endScope or its owner: waiting reads fail at once, later ones too', async () => {
    const before = counts();
    const into = new Uint8Array(1);
    const owner = await connect({ socket: a.socket });
    const w = await owner.createBlob(1);
    await w.seal({ tag: 'g1/0#1/x' });
    // Another connection may not tag in a scope it does not own, nor end it.
    const other = await ipc.createBlob(1);
    expect(await errCode(other.seal({ tag: 'g1/0#2/x' }))).toBe('ERR_NOT_OWNER');
    expect(await errCode(ipc.endScope('g1/0'))).toBe('ERR_NOT_OWNER');
    await other.abort();
    const parked = errCode(rpc.read('g1/0#2/x', into, { wait: true, timeoutMs: 60_000 }));
    await eventually(() => counts().tagWaiters === 1, 'the read waits in the store');
    await owner.endScope('g1/0');
    expect(await parked).toBe('ERR_COLLECTIVE_ABORTED');
    expect(await errCode(rpc.read('g1/0#3/x', into, { wait: true, timeoutMs: 60_000 }))).toBe('ERR_COLLECTIVE_ABORTED');
    // Its objects went with it.
    expect(counts()).toEqual(before);
    // An owner that disconnects ends its scopes the same way.
    const w2 = await owner.createBlob(1);
    await w2.seal({ tag: 'g2/0#1/x' });
    const parked2 = errCode(rpc.read('g2/0#2/x', into, { wait: true, timeoutMs: 60_000 }));
    await eventually(() => counts().tagWaiters === 1, 'the read waits in the store');
    await owner.close();
    expect(await parked2).toBe('ERR_COLLECTIVE_ABORTED');
    expect(counts()).toEqual(before);
  });

  it('a claimed scope is owned before any tag: others may not tag in it, and its owner closing ends it', async () => {
    const into = new Uint8Array(1);
    const owner = await connect({ socket: a.socket });
    await owner.claimScope('g3/0');
    await owner.claimScope('g3/0');
    expect(await errCode(ipc.claimScope('g3/0'))).toBe('ERR_NOT_OWNER');
    const other = await ipc.createBlob(1);
    expect(await errCode(other.seal({ tag: 'g3/0#1/x' }))).toBe('ERR_NOT_OWNER');
    await other.abort();
    const parked = errCode(rpc.read('g3/0#1/x', into, { wait: true, timeoutMs: 60_000 }));
    await eventually(() => counts().tagWaiters === 1, 'the read waits in the store');
    await owner.close();
    expect(await parked).toBe('ERR_COLLECTIVE_ABORTED');
    // Over for good: nobody claims it again.
    expect(await errCode(ipc.claimScope('g3/0'))).toBe('ERR_COLLECTIVE_ABORTED');
    expect(await errCode(ipc.claimScope(''))).toBe('ERR_BAD_REQUEST');
  });

  it('tagged objects die with the connection that made them', async () => {
    const before = counts();
    const other = await connect({ socket: a.socket });
    const w = await other.createBlob(16);
    await w.seal({ tag: 't/owned' });
    expect(counts()).toEqual({ ...before, entries: before.entries + 1, tags: before.tags + 1 });
    await other.close();
    await eventually(() => counts().entries === before.entries, 'the store deletes them');
    expect(counts()).toEqual(before);
  });
});
