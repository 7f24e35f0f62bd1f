/**
 * Names: waits woken from another process, timeouts, conflicts, and names
 * that go away with their object.
 */

import { connect, type Tensor } from 'trellis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { startStore } from './helpers/store.js';

describe('names', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  beforeEach(async () => {
    env = await startStore({ size: 16 * 1024 * 1024 });
  });
  afterEach(async () => {
    await killChildren();
    await env.stop();
  });

  it('getName with wait is woken by a putName from another process', async () => {
    await using c = await connect({ socket: env.socket });
    const waiting = c.getName('results/epoch-1', { wait: true, timeoutMs: 60_000 });
    // The wait is registered in the store before the other process even starts.
    await eventually(async () => (await c.status()).nameWaiters === 1, 'the wait reaches the store');

    const producer = startChild(`
      const c = await connect({ socket: ${JSON.stringify(env.socket)}, name: 'producer' });
      const id = await c.put(new Float64Array([0.5, 0.25]));
      await c.putName('results/epoch-1', id);
      send({ id });
      await c.close();
    `);
    const { id } = await producer.next();
    expect(await waiting).toBe(id);
    expect((await producer.exited).code).toBe(0);
    expect((await c.status()).nameWaiters).toBe(0);
    const t = (await c.get(await c.getName('results/epoch-1'))) as Tensor;
    expect(Array.from(t.data as Float64Array)).toEqual([0.5, 0.25]);
  });

  it('a put with a name wakes every waiter, from any connection', async () => {
    await using a = await connect({ socket: env.socket });
    await using b = await connect({ socket: env.socket });
    const w1 = a.getName('shared', { wait: true });
    const w2 = b.getName('shared', { wait: true, timeoutMs: 60_000 });
    await eventually(async () => (await a.status()).nameWaiters === 2, 'both waits reach the store');
    const id = await b.put(new Int32Array([7]), { name: 'shared' });
    expect(await Promise.all([w1, w2])).toEqual([id, id]);
  });

  it('a wait with a timeout ends with ERR_TIMEOUT; without wait a missing name is ERR_NAME_NOT_FOUND', async () => {
    await using c = await connect({ socket: env.socket });
    expect(await errCode(c.getName('never', { wait: true, timeoutMs: 100 }))).toBe('ERR_TIMEOUT');
    expect((await c.status()).nameWaiters).toBe(0);
    expect(await errCode(c.getName('never'))).toBe('ERR_NAME_NOT_FOUND');
    // A name that exists is answered at once, with or without wait.
    const id = await c.put(new Uint8Array([1]), { name: 'there' });
    expect(await c.getName('there', { wait: true, timeoutMs: 100 })).toBe(id);
  });

  it('a taken name gives ERR_OBJECT_EXISTS unless overwrite', async () => {
    await using c = await connect({ socket: env.socket });
    const a = await c.put(new Uint8Array([1]), { name: 'model/latest' });
    const b = await c.put(new Uint8Array([2]));
    expect(await errCode(c.putName('model/latest', b))).toBe('ERR_OBJECT_EXISTS');
    expect(await errCode(c.put(new Uint8Array([3]), { name: 'model/latest' }))).toBe('ERR_OBJECT_EXISTS');
    const w = await c.createBlob(8);
    expect(await errCode(w.seal({ name: 'model/latest' }))).toBe('ERR_OBJECT_EXISTS');
    expect(await c.getName('model/latest')).toBe(a);
    // Binding the same id again is not a conflict.
    await c.putName('model/latest', a);

    await c.putName('model/latest', b, { overwrite: true });
    expect(await c.getName('model/latest')).toBe(b);
    // a lost the name: deleting it leaves the name on b.
    await c.delete(a);
    expect(await c.getName('model/latest')).toBe(b);

    // Names of objects that do not exist are refused.
    expect(await errCode(c.putName('ghost', 'o00000000deadbeef'))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(c.putName('model/latest', a, { overwrite: true }))).toBe('ERR_OBJECT_NOT_FOUND');
  });

  it('deleting an object drops its names, even while a client still holds it', async () => {
    await using c = await connect({ socket: env.socket });
    const id = await c.put(new Uint8Array([1, 2, 3]), { name: 'ds/a' });
    await c.putName('ds/alias', id);
    await c.get(id);
    await c.delete(id);
    expect(await errCode(c.getName('ds/a'))).toBe('ERR_NAME_NOT_FOUND');
    expect(await errCode(c.getName('ds/alias'))).toBe('ERR_NAME_NOT_FOUND');
    expect(await c.listNames()).toEqual({});
    // The name is free again for a new object.
    const next = await c.put(new Uint8Array([4]), { name: 'ds/a' });
    expect(await c.getName('ds/a')).toBe(next);
    await c.release(id);
    expect(await c.getName('ds/a')).toBe(next);
  });

  it('dropName unbinds only the name; listNames filters by prefix', async () => {
    await using c = await connect({ socket: env.socket });
    const x = await c.put(new Uint8Array([1]), { name: 'fmnist/train' });
    const y = await c.put(new Uint8Array([2]), { name: 'fmnist/test' });
    const z = await c.put(new Uint8Array([3]), { name: 'cifar/train' });
    expect(await c.listNames('fmnist/')).toEqual({ 'fmnist/train': x, 'fmnist/test': y });
    expect(await c.listNames()).toEqual({ 'fmnist/train': x, 'fmnist/test': y, 'cifar/train': z });
    expect(await c.listNames('nothing/')).toEqual({});

    await c.dropName('fmnist/train');
    expect(await errCode(c.getName('fmnist/train'))).toBe('ERR_NAME_NOT_FOUND');
    expect(await errCode(c.dropName('fmnist/train'))).toBe('ERR_NAME_NOT_FOUND');
    expect(await c.listNames('fmnist/')).toEqual({ 'fmnist/test': y });
    // The object itself is untouched.
    expect(Array.from(((await c.get(x)) as Tensor).data as Uint8Array)).toEqual([1]);

    // A dropped name stays dropped when its former object is deleted later, and can be rebound.
    await c.putName('fmnist/train', y);
    await c.delete(x);
    expect(await c.getName('fmnist/train')).toBe(y);
  });

  it('a waiter whose client closes is removed from the store', async () => {
    const c = await connect({ socket: env.socket });
    const waiting = errCode(c.getName('later', { wait: true }));
    await eventually(async () => (await c.status()).nameWaiters === 1, 'the wait reaches the store');
    await c.close();
    expect(await waiting).toBe('ERR_CLOSED');
    await using d = await connect({ socket: env.socket });
    await eventually(async () => (await d.status()).nameWaiters === 0, 'the store forgets the wait');
  });
});
