import { readFileSync } from 'node:fs';
import { connect, type Tensor } from 'trellis';
import { describe, expect, it } from 'vitest';
import { eventually } from './helpers/child.js';
import { startStore } from './helpers/store.js';

const MiB = 1024 * 1024;

/** Bytes the machine's huge-page pool has free now (vm.nr_hugepages; 0 on machines that reserved none). */
function hugePagesFree(): number {
  const m = /HugePages_Free:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 2 * MiB : 0;
}

describe('--reserve', () => {
  it('faults the whole arena in at start and keeps freed pages for reuse', async () => {
    const env = await startStore({ size: 32 * MiB, segmentSize: 16 * MiB, reserve: true });
    try {
      await using c = await connect({ socket: env.socket });
      const st = await c.status();
      expect(st.reserved).toBe(true);
      expect(st.segments.map((s) => s.size)).toEqual([16 * MiB, 16 * MiB]);
      expect(st.memoryResident).toBe(32 * MiB);
      const id = await c.put(new Uint8Array(8 * MiB).fill(7));
      await c.delete(id);
      const after = await c.status();
      expect(after.memoryUsed).toBe(0);
      expect(after.memoryResident).toBe(32 * MiB); // not punched: kept warm
    } finally {
      await env.stop();
    }
  });

  it('without it, segments appear on demand and deleted objects give memory back', async () => {
    const env = await startStore({ size: 64 * MiB, segmentSize: 16 * MiB });
    try {
      await using c = await connect({ socket: env.socket });
      expect((await c.status()).segments).toEqual([]);
      const a = await c.put(new Uint8Array(10 * MiB).fill(1));
      const b = await c.put(new Uint8Array(10 * MiB).fill(2));
      const st = await c.status();
      expect(st.segments.length).toBe(2); // the second did not fit beside the first
      expect(st.memoryResident).toBeGreaterThanOrEqual(20 * MiB);
      await c.delete([a, b]);
      expect((await c.status()).memoryResident).toBeGreaterThanOrEqual(20 * MiB); // warm for the punch delay
      const reused = await c.put(new Uint8Array(10 * MiB).fill(3));
      await c.delete(reused);
      await eventually(async () => (await c.status()).memoryResident < MiB, 'pages go back after the delay');
    } finally {
      await env.stop();
    }
  });

  it('with punchDelayMs 0, a delete gives memory back at once', async () => {
    const env = await startStore({ size: 64 * MiB, segmentSize: 16 * MiB, punchDelayMs: 0 });
    try {
      await using c = await connect({ socket: env.socket });
      const a = await c.put(new Uint8Array(10 * MiB).fill(1));
      expect((await c.status()).memoryResident).toBeGreaterThanOrEqual(10 * MiB);
      await c.delete(a);
      expect((await c.status()).memoryResident).toBeLessThan(MiB);
    } finally {
      await env.stop();
    }
  });

  it('--huge-pages puts each segment on huge pages the pool can give, and on normal pages otherwise', async () => {
    // This test does not change the pool (a machine setting): where none is reserved it checks the
    // fallback; bench/loader.js reserves one to measure the huge-page path.
    let avail = hugePagesFree();
    const env = await startStore({ size: 32 * MiB, segmentSize: 16 * MiB, reserve: true, hugePages: true });
    try {
      const expected = [16 * MiB, 16 * MiB].map((size) => {
        const huge = avail >= size;
        if (huge) avail -= size;
        return { size, hugePages: huge };
      });
      await using c = await connect({ socket: env.socket });
      const st = await c.status();
      expect(st.segments.map((g) => ({ size: g.size, hugePages: g.hugePages }))).toEqual(expected);
      const id = await c.put(new Uint8Array(12 * MiB).fill(9));
      const t = (await c.get(id)) as Tensor;
      expect([t.data.length, t.data[0], t.data[12 * MiB - 1]]).toEqual([12 * MiB, 9, 9]);
    } finally {
      await env.stop();
    }
  });

  it('--huge-pages without --reserve is refused: ERR_BAD_REQUEST', async () => {
    await expect(startStore({ size: 32 * MiB, hugePages: true })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
  });
});
