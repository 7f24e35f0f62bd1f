import { describe, expect, it } from 'vitest';
import { ALIGN, SegmentAllocator } from '../dist/src/store/allocator.js';

describe('SegmentAllocator', () => {
  it('aligns blocks, merges neighbours on free and reports the largest free block', () => {
    const a = new SegmentAllocator(1024 * 1024);
    const x = a.alloc(1);
    const y = a.alloc(100);
    const z = a.alloc(64);
    expect([x, y, z]).toEqual([0, 64, 192]);
    expect(a.usedBytes).toBe(256);
    a.free(y, 100);
    expect(a.freeBlockCount()).toBe(2);
    a.free(x, 1);
    expect(a.freeBlockCount()).toBe(2); // x merged with y's hole
    a.free(z, 64);
    expect(a.freeBlockCount()).toBe(1);
    expect(a.largestFree()).toBe(1024 * 1024);
    expect(a.usedBytes).toBe(0);
  });

  it('returns -1 when nothing fits, and reuses freed space first-fit', () => {
    const a = new SegmentAllocator(4096);
    const b1 = a.alloc(2048);
    const b2 = a.alloc(2048);
    expect(a.alloc(64)).toBe(-1);
    a.free(b1, 2048);
    expect(a.alloc(1024)).toBe(b1);
    expect(a.alloc(2048)).toBe(-1);
    a.free(b2, 2048);
    expect(a.alloc(3072 + 64)).toBe(-1); // 3072 free, all of it after the 1024 still in use
    expect(a.alloc(3000)).toBe(1024); // the freed 2048 merged with the 1024 left over before it
    expect(a.alloc(128)).toBe(-1); // 3000 rounds up to 3008: 64 bytes are left
    expect(a.alloc(64)).toBe(4032);
  });

  it('never overlaps and conserves bytes under random alloc/free (against a reference model)', () => {
    const size = 1 << 20;
    const a = new SegmentAllocator(size);
    const live = new Map<number, number>();
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    for (let i = 0; i < 20_000; i++) {
      if (live.size > 0 && rand() < 0.45) {
        const keys = [...live.keys()];
        const off = keys[Math.floor(rand() * keys.length)];
        a.free(off, live.get(off)!);
        live.delete(off);
      } else {
        const want = 1 + Math.floor(rand() ** 3 * 64 * 1024);
        const off = a.alloc(want);
        if (off >= 0) {
          expect(off % ALIGN).toBe(0);
          live.set(off, want);
        }
      }
    }
    const spans = [...live].map(([o, s]) => [o, o + Math.ceil(s / ALIGN) * ALIGN]).sort((p, q) => p[0] - q[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i][0]).toBeGreaterThanOrEqual(spans[i - 1][1]);
    const used = spans.reduce((n, [s, e]) => n + (e - s), 0);
    expect(a.usedBytes).toBe(used);
    for (const [o, s] of live) a.free(o, s);
    expect(a.freeBlockCount()).toBe(1);
    expect(a.largestFree()).toBe(size);
  });
});
