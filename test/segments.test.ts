/**
 * Segments never strand free memory (issue 8, defect 3): a store that once
 * used all its segments can still take one blob as large as its free memory,
 * because empty segments are released to make room for a larger one; status
 * reports the largest block a create could get. Shown small (8 MiB store, 4
 * MiB segments): the same shape as a 2 GiB store with 1 GiB segments.
 */
import { connect } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesMismatch, pattern } from './helpers/bytes.js';
import { startStore } from './helpers/store.js';

const MIB = 1024 * 1024;

describe('segments', () => {
  let stop: (() => Promise<void>) | null = null;
  afterEach(async () => {
    await stop?.();
    stop = null;
  });

  it('a blob larger than one segment fits after both segments were filled and emptied', async () => {
    const env = await startStore({ size: 8 * MIB, segmentSize: 4 * MIB, punchDelayMs: 0 });
    stop = env.stop;
    await using c = await connect({ socket: env.socket });
    const a = await c.putBlob(pattern(4 * MIB, 1));
    const b = await c.putBlob(pattern(4 * MIB, 2));
    expect((await c.status()).segments.map((s) => s.size)).toEqual([4 * MIB, 4 * MIB]);
    expect((await c.status()).largestBlock).toBe(0);
    await c.delete([a, b]);
    expect((await c.status()).largestBlock).toBe(8 * MIB);

    const w = await c.createBlob(6 * MIB);
    w.buffer.set(pattern(6 * MIB, 3));
    const big = await w.seal();
    const st = await c.status();
    expect(st.segments.map((s) => ({ size: s.size, used: s.used }))).toEqual([{ size: 6 * MIB, used: 6 * MIB }]);
    expect(st.largestBlock).toBe(2 * MIB);
    // The client that mapped the released segments reads the new one; so does a fresh one.
    expect(bytesMismatch(await c.getBlob(big), pattern(6 * MIB, 3))).toBeNull();
    await c.release(big);
    await using fresh = await connect({ socket: env.socket });
    expect(bytesMismatch(await fresh.getBlob(big), pattern(6 * MIB, 3))).toBeNull();
    await fresh.release(big);
    // The rest of the limit still serves.
    const small = await c.putBlob(pattern(2 * MIB, 4));
    expect(bytesMismatch(await fresh.getBlob(small), pattern(2 * MIB, 4))).toBeNull();
  });
});
