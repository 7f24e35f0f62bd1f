/**
 * Zero copy, proven from the kernel's point of view: a 256 MiB tensor written
 * by one process is read page by page by another, and the reader's private
 * memory does not grow by the size of the tensor.
 *
 * Which smaps fields mean "copied": a copy lands in anonymous memory (the JS
 * heap, an ArrayBuffer, a private copy-on-write page), so `Anonymous` is the
 * witness. `Private_Dirty` alone is not: the writer has exited, so the memfd
 * pages are mapped by the reader only, and shmem pages are always dirty, so
 * the kernel reports all 256 MiB of the *shared* pages as Private_Dirty too.
 * Those pages are also counted in `Pss_Shmem`; Private_Dirty beyond the new
 * shmem pages is what a copy would add.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killChildren, startChild } from './helpers/child.js';
import { spawnStore } from './helpers/store.js';

const SIZE = 256 * 1024 * 1024;
const PAGE = 4096;
const MIB_KB = 1024;

describe('zero copy across processes', () => {
  let store: Awaited<ReturnType<typeof spawnStore>>;
  beforeAll(async () => {
    store = await spawnStore(['--size', '320M']);
  });
  afterAll(async () => {
    await killChildren();
    await store?.stop();
  });

  it('a second process reads every page of a 256 MiB tensor without copying it', async () => {
    // The writer fills the tensor in place (a byte per page is enough to fault every page in) and exits.
    const writer = startChild(`
      const c = await connect({ socket: ${JSON.stringify(store.socket)}, name: 'writer' });
      const w = await c.createTensor('uint8', [${SIZE}]);
      for (let p = 0; p < ${SIZE / PAGE}; p++) w.data[p * ${PAGE}] = (p * 7 + 3) & 0xff;
      send({ id: await w.seal() });
      await c.close();
    `);
    const { id } = await writer.next();
    expect(await writer.exited).toEqual({ code: 0, signal: null });

    const reader = startChild(`
      import { readFileSync } from 'node:fs';
      import { native } from ${JSON.stringify(new URL('../dist/src/native.js', import.meta.url).pathname)};
      const rollup = () => Object.fromEntries(
        readFileSync('/proc/self/smaps_rollup', 'utf8').split('\\n').filter((l) => l.endsWith(' kB'))
          .map((l) => [l.split(':')[0].trim(), Number.parseInt(l.split(':')[1], 10)]));
      const c = await connect({ socket: ${JSON.stringify(store.socket)}, name: 'reader' });
      await c.status(); // warm the connection so the measurement sees only the get and the reads
      const before = rollup();
      const t = await c.get(${JSON.stringify(id)});
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      let sum = 0;
      for (let i = 0; i < bytes.length; i += ${PAGE}) sum += bytes[i];
      const after = rollup();
      const delta = {};
      for (const k of Object.keys(after)) delta[k] = after[k] - (before[k] ?? 0);
      const maps = readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/memfd:trellis'));
      const addr = native.address(t.data.buffer);
      const holding = maps.filter((l) => {
        const [lo, hi] = l.split(' ')[0].split('-').map((h) => BigInt('0x' + h));
        return addr >= lo && addr < hi;
      });
      send({ sum, length: bytes.length, dtype: t.dtype, delta, maps, holding });
      await c.close();
    `);
    const r = (await reader.next(120_000)) as {
      sum: number;
      length: number;
      dtype: string;
      delta: Record<string, number>;
      maps: string[];
      holding: string[];
    };
    expect(await reader.exited).toEqual({ code: 0, signal: null });

    let expected = 0;
    for (let p = 0; p < SIZE / PAGE; p++) expected += (p * 7 + 3) & 0xff;
    expect(r.dtype).toBe('uint8');
    expect(r.length).toBe(SIZE);
    expect(r.sum).toBe(expected);

    const d = r.delta;
    // Every page really was mapped in: resident memory grew by the whole tensor...
    expect(d.Rss).toBeGreaterThanOrEqual(SIZE / 1024 - 4 * MIB_KB);
    // ...as shared-memory pages, not as anonymous (copied) ones.
    expect(d.Anonymous).toBeLessThan(8 * MIB_KB);
    if (d.Pss_Shmem !== undefined) {
      expect(d.Pss_Shmem).toBeGreaterThanOrEqual(SIZE / 1024 - 4 * MIB_KB);
      expect(d.Private_Dirty - d.Pss_Shmem).toBeLessThan(8 * MIB_KB);
    } else {
      // Older kernels: private dirty memory that is not in the shared mapping is anonymous.
      expect(d.Private_Dirty - (d.Rss - d.Anonymous)).toBeLessThan(8 * MIB_KB);
    }

    // The view lies inside a read-only shared mapping of a trellis memfd.
    expect(r.holding).toHaveLength(1);
    const [range, perms] = r.holding[0].split(/\s+/);
    expect(range).toMatch(/^[0-9a-f]+-[0-9a-f]+$/);
    expect(perms).toBe('r--s');
    expect(r.holding[0]).toMatch(/\/memfd:trellis[^ ]* \(deleted\)$/);
  });
});
