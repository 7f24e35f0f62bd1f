/**
 * Running out of memory: ERR_OUT_OF_MEMORY without spilling, spilling to disk
 * with a spill directory (pinned objects never spill), and memory given back
 * to the OS on delete (hole punching).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Tensor, type TrellisClient } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesMismatch, bytesOf, pattern } from './helpers/bytes.js';
import { errCode, eventually } from './helpers/child.js';
import { startStore, tempDir } from './helpers/store.js';

const MIB = 1024 * 1024;

/** The id of a tensor's data blob (spill files are per blob). */
async function blobOf(c: TrellisClient, tensorId: string): Promise<string> {
  const [o] = (await c.list()).filter((x) => x.id === tensorId);
  return o.members[0];
}

/** Spill files in a directory (the store's LOCK and ids files aside). */
function spillFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.blob'));
}

async function isSpilled(c: TrellisClient, blobId: string): Promise<boolean> {
  const [o] = (await c.list({ typename: 'Blob' })).filter((x) => x.id === blobId);
  return o.spilled;
}

describe('memory limits', () => {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });

  function spillDirectory(): string {
    const { dir, cleanup } = tempDir('trellis-spill-');
    stops.push(async () => cleanup());
    return join(dir, 'spill');
  }

  async function store(opts: Parameters<typeof startStore>[0]) {
    const env = await startStore(opts);
    stops.push(env.stop);
    return env;
  }

  it('full memory gives ERR_OUT_OF_MEMORY and the store keeps serving', async () => {
    const env = await store({ size: 8 * MIB });
    await using c = await connect({ socket: env.socket });
    const a = await c.put(pattern(6 * MIB, 1));
    expect(await errCode(c.put(pattern(3 * MIB, 2)))).toBe('ERR_OUT_OF_MEMORY');
    expect(await errCode(c.createBlob(3 * MIB))).toBe('ERR_OUT_OF_MEMORY');
    // Inline puts (below the inline limit) take the other path through the store.
    const fill = await c.createBlob(2 * MIB - 64 * 1024);
    expect(await errCode(c.put(pattern(128 * 1024, 3)))).toBe('ERR_OUT_OF_MEMORY');
    await fill.abort();
    expect((await c.status()).memoryUsed).toBe(6 * MIB);

    // A smaller put still fits; the first object is intact.
    const small = await c.put(pattern(MIB, 4));
    expect(bytesMismatch(bytesOf((await c.get(a)) as Tensor), pattern(6 * MIB, 1))).toBeNull();
    await c.release(a);

    // Deleting frees room for what did not fit.
    await c.delete([a, small]);
    expect((await c.status()).memoryUsed).toBe(0);
    const b = await c.put(pattern(7 * MIB, 5));
    expect(bytesMismatch(bytesOf((await c.get(b)) as Tensor), pattern(7 * MIB, 5))).toBeNull();
  });

  it('spills unreferenced objects to disk when memory runs out and restores them byte-exact', async () => {
    const spillDir = spillDirectory();
    const s = await store({ size: 8 * MIB, spillDir });
    await using c = await connect({ socket: s.socket });

    const a = await c.put(pattern(3 * MIB, 1));
    const b = await c.put(pattern(3 * MIB, 2));
    const aBlob = await blobOf(c, a);
    expect((await c.status()).spill).toMatchObject({ dir: spillDir, objects: 0, bytes: 0 });

    // No room for c: the least recently used object (a) goes to disk.
    const x = await c.put(pattern(3 * MIB, 3));
    let st = await c.status();
    expect(st.spill).toMatchObject({ objects: 1, bytes: 3 * MIB });
    expect(await isSpilled(c, aBlob)).toBe(true);
    expect(spillFiles(spillDir)).toEqual([`${aBlob}.blob`]);

    // get brings it back, byte for byte (spilling another to make room), and its file goes.
    const ta = (await c.get(a)) as Tensor;
    expect(bytesMismatch(bytesOf(ta), pattern(3 * MIB, 1))).toBeNull();
    expect(await isSpilled(c, aBlob)).toBe(false);
    expect(existsSync(join(spillDir, `${aBlob}.blob`))).toBe(false);
    st = await c.status();
    expect(st.spill.objects).toBe(1);
    expect(st.counters.restores).toBe(1);

    // a is pinned by our get: however much is asked for, it is never spilled.
    const y = await c.put(pattern(3 * MIB, 4));
    const z = await c.put(pattern(3 * MIB, 5));
    expect(await isSpilled(c, aBlob)).toBe(false);
    expect((await c.status()).spill.objects).toBe(3);
    expect(await errCode(c.createBlob(6 * MIB))).toBe('ERR_OUT_OF_MEMORY');
    expect(await isSpilled(c, aBlob)).toBe(false);
    expect(bytesMismatch(bytesOf(ta), pattern(3 * MIB, 1))).toBeNull();

    // Every object reads back exact, whether it was on disk or not.
    await c.release(a);
    for (const [id, seed] of [
      [b, 2],
      [x, 3],
      [y, 4],
      [z, 5],
    ] as const) {
      const t = (await c.get(id)) as Tensor;
      expect(bytesMismatch(bytesOf(t), pattern(3 * MIB, seed))).toBeNull();
      await c.release(id);
    }

    // Deleting spilled objects removes their files.
    st = await c.status();
    expect(st.spill.objects).toBeGreaterThan(0);
    await c.delete([a, b, x, y, z]);
    st = await c.status();
    expect(st.spill).toMatchObject({ objects: 0, bytes: 0 });
    expect(st.memoryUsed).toBe(0);
    expect(spillFiles(spillDir)).toEqual([]);
  });

  it('a request that can never fit fails at once without spilling anything', async () => {
    const spillDir = spillDirectory();
    const s = await store({ size: 8 * MIB, spillDir });
    await using c = await connect({ socket: s.socket });
    await c.put(pattern(3 * MIB, 1));
    await c.put(pattern(3 * MIB, 2));
    expect(await errCode(c.createBlob(9 * MIB))).toBe('ERR_OUT_OF_MEMORY');
    const st = await c.status();
    expect(st.spill.objects).toBe(0);
    expect(spillFiles(spillDir)).toEqual([]);
  });

  it('deleting a large object gives its pages back to the OS (store without reserve)', async () => {
    const s = await store({ size: 256 * MIB });
    await using c = await connect({ socket: s.socket });
    const before = (await c.status()).memoryResident;
    const w = await c.createTensor('uint8', [128 * MIB]);
    w.data.fill(1);
    const id = await w.seal();
    const full = (await c.status()).memoryResident;
    expect(full - before).toBeGreaterThanOrEqual(128 * MIB);
    await c.delete(id);
    expect((await c.status()).memoryUsed).toBe(0);
    // freed pages stay warm for punchDelayMs (1 s by default), then go back
    await eventually(
      async () => (await c.status()).memoryResident < before + 4 * MIB,
      'resident memory falls after the punch delay',
    );
  });
});
