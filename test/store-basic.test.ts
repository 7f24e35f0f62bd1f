import { connect, type Tensor, TrellisError } from 'trellis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startStore } from './helpers/store.js';

describe('store basics (in-process store, IPC client)', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  beforeEach(async () => {
    env = await startStore();
  });
  afterEach(async () => {
    await env.stop();
  });

  it('puts and gets a tensor inline and through create+seal', async () => {
    await using c = await connect({ socket: env.socket });
    const small = new Float32Array([1, 2, 3]);
    const big = new Float64Array(1 << 20).map((_, i) => i * 0.5);
    const a = await c.put(small, { name: 'small' });
    const b = await c.put({ dtype: 'float64', shape: [1024, 1024], data: big });
    const ta = (await c.get(a)) as Tensor;
    const tb = (await c.get(b)) as Tensor;
    expect(Array.from(ta.data as Float32Array)).toEqual([1, 2, 3]);
    expect(tb.shape).toEqual([1024, 1024]);
    expect(tb.data[12345]).toBe(12345 * 0.5);
    expect(await c.getName('small')).toBe(a);
  });

  it('a seal refused for a taken name leaves the writer usable: seal again or abort', async () => {
    await using c = await connect({ socket: env.socket });
    await c.put(new Uint8Array([1]), { name: 'taken' });
    const used = (await c.status()).memoryUsed;
    const w = await c.createTensor('float32', [4]);
    w.data.set([1, 2, 3, 4]);
    await expect(w.seal({ name: 'taken' })).rejects.toMatchObject({ code: 'ERR_OBJECT_EXISTS' });
    const id = await w.seal({ name: 'free' });
    expect(await c.getName('free')).toBe(id);
    await expect(w.abort()).rejects.toMatchObject({ code: 'ERR_ALREADY_SEALED' });
    const b = await c.createBlob(1000);
    await expect(b.seal({ name: 'taken' })).rejects.toMatchObject({ code: 'ERR_OBJECT_EXISTS' });
    await b.abort();
    expect((await c.status()).memoryUsed).toBe(used + 64);
  });

  it('answers unknown ids with ERR_OBJECT_NOT_FOUND', async () => {
    await using c = await connect({ socket: env.socket });
    await expect(c.get('o0000ffffffffffff')).rejects.toMatchObject({ code: 'ERR_OBJECT_NOT_FOUND' });
    await expect(c.get('nope')).rejects.toBeInstanceOf(TrellisError);
  });
});
