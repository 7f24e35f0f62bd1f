/**
 * Object lifetimes across clients: delete while referenced, members of live
 * objects, and the seal / abort / get / release rules, each failure with its
 * code. Store-side checks that the client API would catch first are made over
 * a raw connection, so the store's own answer is what is tested.
 */

import { connect, type Tensor } from 'trellis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bytesMismatch, bytesOf } from './helpers/bytes.js';
import { errCode } from './helpers/child.js';
import { RawConn } from './helpers/raw-conn.js';
import { startStore } from './helpers/store.js';

const MIB = 1024 * 1024;

describe('object lifetimes', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  const raws: RawConn[] = [];
  beforeEach(async () => {
    env = await startStore({ size: 16 * MIB });
  });
  afterEach(async () => {
    for (const r of raws.splice(0)) r.destroy();
    await env.stop();
  });

  async function raw(): Promise<RawConn> {
    const r = await RawConn.open(env.socket);
    raws.push(r);
    expect(await r.hello()).toMatchObject({ t: 'ok' });
    return r;
  }

  it('delete while referenced: the holder keeps reading, new gets fail, memory goes on the last release', async () => {
    await using reader = await connect({ socket: env.socket, name: 'reader' });
    await using deleter = await connect({ socket: env.socket, name: 'deleter' });
    await using other = await connect({ socket: env.socket, name: 'other' });
    const data = new Uint8Array(4 * MIB).map((_, i) => (i * 13) & 0xff);
    const id = await deleter.put(data);
    const before = await deleter.status();

    const view = (await reader.get(id)) as Tensor;
    (await reader.get(id)) as Tensor; // two references from one client
    await deleter.delete(id);

    expect(await errCode(deleter.get(id))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(other.get(id))).toBe('ERR_OBJECT_NOT_FOUND');
    expect((await other.list()).map((o) => o.id)).not.toContain(id);
    expect(await errCode(other.delete(id))).toBe('ERR_OBJECT_NOT_FOUND');
    expect((await other.status()).memoryUsed).toBe(before.memoryUsed);

    // The memory is not reused while held: a new object the same size lands elsewhere.
    const filler = await other.put(new Uint8Array(4 * MIB).fill(0xab));
    expect(bytesMismatch(bytesOf(view), data)).toBeNull();

    await reader.release(id);
    expect((await other.status()).memoryUsed).toBe(before.memoryUsed + 4 * MIB); // one reference left
    expect(bytesMismatch(bytesOf(view), data)).toBeNull();
    await reader.release(id);
    expect((await other.status()).memoryUsed).toBe(before.memoryUsed); // freed; filler remains
    expect(await errCode(reader.get(id))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(reader.release(id))).toBe('ERR_NOT_REFERENCED');
    await other.delete(filler);
    expect((await other.status()).memoryUsed).toBe(before.memoryUsed - 4 * MIB);
  });

  it('a member of a live object cannot be deleted alone', async () => {
    await using c = await connect({ socket: env.socket });
    const t = await c.put(new Float32Array(1024).fill(2));
    const [rec] = (await c.list()).filter((o) => o.id === t);
    const blob = rec.members[0];
    expect(await errCode(c.delete(blob))).toBe('ERR_OBJECT_IN_USE');

    // The same holds one level up: a tensor inside a composite.
    const composite = await c.putObject({ typename: 'Dataset', meta: { split: 'train' }, members: [t] });
    expect(await errCode(c.delete(t))).toBe('ERR_OBJECT_IN_USE');
    const ds = await c.get(composite);
    expect(ds).toMatchObject({ typename: 'Dataset', meta: { split: 'train' } });
    await c.release(composite);

    // Deleting the parent (deep) takes the members with it.
    const st = await c.status();
    await c.delete(composite);
    expect(await errCode(c.get(t))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(c.get(blob))).toBe('ERR_OBJECT_NOT_FOUND');
    const after = await c.status();
    expect(after.entries).toBe(st.entries - 3);
    expect(after.memoryUsed).toBe(0);

    // A blob and its parent deleted in one request is allowed.
    const t2 = await c.put(new Float32Array(16));
    const [rec2] = (await c.list()).filter((o) => o.id === t2);
    await c.delete([rec2.members[0], t2], { deep: false });
    expect((await c.status()).entries).toBe(after.entries);
  });

  it('seal, abort, get and release follow their rules, with a code for each breach', async () => {
    await using owner = await connect({ socket: env.socket, name: 'owner' });
    const w = await owner.createBlob(1000);
    w.buffer.fill(3);

    // Not sealed yet: nobody can read it, name it or delete it.
    expect(await errCode(owner.get(w.id))).toBe('ERR_NOT_SEALED');
    expect(await errCode(owner.putName('half-written', w.id))).toBe('ERR_NOT_SEALED');
    expect(await errCode(owner.delete(w.id))).toBe('ERR_NOT_SEALED');
    const stranger = await raw();
    expect(await stranger.request({ t: 'get', ids: [w.id] })).toMatchObject({ code: 'ERR_NOT_SEALED' });

    // Only the creating connection may seal or abort it.
    expect(await stranger.request({ t: 'seal', id: w.id })).toMatchObject({ code: 'ERR_NOT_OWNER' });
    expect(await stranger.request({ t: 'abort', id: w.id })).toMatchObject({ code: 'ERR_NOT_OWNER' });

    expect(await w.seal()).toBe(w.id);
    expect(await errCode(w.seal())).toBe('ERR_ALREADY_SEALED');
    expect(await errCode(w.abort())).toBe('ERR_ALREADY_SEALED');
    const bytes = await owner.getBlob(w.id);
    expect(bytes.length).toBe(1000);
    expect(bytesMismatch(bytes, new Uint8Array(bytes.length).fill(3))).toBeNull();

    // The store itself refuses a second seal or an abort of sealed data, from anyone.
    const creator = await raw();
    const made = await creator.request({ t: 'create', size: 64 });
    expect(made).toMatchObject({ t: 'ok' });
    const rawId = String(made?.id);
    expect(await creator.request({ t: 'seal', id: rawId })).toMatchObject({ t: 'ok', id: rawId });
    expect(await creator.request({ t: 'seal', id: rawId })).toMatchObject({ code: 'ERR_ALREADY_SEALED' });
    expect(await creator.request({ t: 'abort', id: rawId })).toMatchObject({ code: 'ERR_ALREADY_SEALED' });
    expect(await stranger.request({ t: 'seal', id: rawId })).toMatchObject({ code: 'ERR_ALREADY_SEALED' });

    // An aborted blob is gone.
    const gone = await creator.request({ t: 'create', size: 64 });
    expect(await creator.request({ t: 'abort', id: gone?.id })).toMatchObject({ t: 'ok' });
    expect(await creator.request({ t: 'get', ids: [gone?.id] })).toMatchObject({ code: 'ERR_OBJECT_NOT_FOUND' });
    expect(await creator.request({ t: 'seal', id: gone?.id })).toMatchObject({ code: 'ERR_OBJECT_NOT_FOUND' });

    // release of something not held: refused by the client, and by the store when asked directly.
    expect(await errCode(owner.release(rawId))).toBe('ERR_NOT_REFERENCED');
    expect(await stranger.request({ t: 'release', ids: [rawId] })).toMatchObject({ code: 'ERR_NOT_REFERENCED' });
    expect(await stranger.request({ t: 'get', ids: [rawId] })).toMatchObject({ t: 'ok' });
    expect(await stranger.request({ t: 'release', ids: [rawId] })).toMatchObject({ t: 'ok' });
    expect(await stranger.request({ t: 'release', ids: [rawId] })).toMatchObject({ code: 'ERR_NOT_REFERENCED' });
    // A batched release is all or nothing.
    expect(await stranger.request({ t: 'get', ids: [rawId] })).toMatchObject({ t: 'ok' });
    expect(await stranger.request({ t: 'release', ids: [rawId, w.id] })).toMatchObject({
      code: 'ERR_NOT_REFERENCED',
    });
    const [summary] = (await owner.list({ typename: 'Blob' })).filter((o) => o.id === rawId);
    expect(summary.references).toBe(1);

    // A get of many ids is all or nothing too.
    expect(await stranger.request({ t: 'get', ids: [w.id, 'o00000000deadbeef'] })).toMatchObject({
      code: 'ERR_OBJECT_NOT_FOUND',
    });
    const [wsum] = (await owner.list({ typename: 'Blob' })).filter((o) => o.id === w.id);
    expect(wsum.references).toBe(1); // the owner's getBlob only
  });
});
