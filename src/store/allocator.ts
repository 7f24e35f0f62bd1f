/**
 * A first-fit allocator over one segment, with free blocks kept in
 * power-of-two size bins (so a fit is found without scanning every block) and
 * indexed by start and end (so a freed block merges with both neighbours in
 * O(1)). Every block is a multiple of ALIGN bytes and starts on an ALIGN
 * boundary, which keeps Arrow buffers and every TypedArray aligned.
 */
export const ALIGN = 64;

export function alignUp(n: number, a = ALIGN): number {
  return Math.ceil(n / a) * a;
}

function binOf(size: number): number {
  return 31 - Math.clz32(Math.max(1, Math.floor(size / ALIGN)));
}

export interface FreeRange {
  off: number;
  size: number;
}

export class SegmentAllocator {
  private readonly byStart = new Map<number, number>(); // off -> size
  private readonly byEnd = new Map<number, number>(); // end -> off
  private readonly bins: Set<number>[] = [];
  private freeTotal: number;

  constructor(readonly size: number) {
    this.freeTotal = 0;
    if (size >= ALIGN) this.insert(0, size - (size % ALIGN));
  }

  get freeBytes(): number {
    return this.freeTotal;
  }

  get usedBytes(): number {
    return this.size - this.freeTotal;
  }

  /** Allocates `size` bytes (rounded up to ALIGN); returns the offset, or -1 when no free block fits. */
  alloc(size: number): number {
    const need = alignUp(Math.max(size, 1));
    for (let b = binOf(need); b < this.bins.length; b++) {
      const bin = this.bins[b];
      if (!bin || bin.size === 0) continue;
      for (const off of bin) {
        const have = this.byStart.get(off)!;
        if (have < need) continue;
        this.remove(off, have);
        if (have > need) this.insert(off + need, have - need);
        return off;
      }
    }
    return -1;
  }

  /** Frees a block and returns the merged free range that now contains it. */
  free(off: number, size: number): FreeRange {
    let start = off;
    let len = alignUp(size);
    const before = this.byEnd.get(start);
    if (before !== undefined) {
      const bsize = this.byStart.get(before)!;
      this.remove(before, bsize);
      start = before;
      len += bsize;
    }
    const afterSize = this.byStart.get(start + len);
    if (afterSize !== undefined) {
      this.remove(start + len, afterSize);
      len += afterSize;
    }
    this.insert(start, len);
    return { off: start, size: len };
  }

  largestFree(): number {
    for (let b = this.bins.length - 1; b >= 0; b--) {
      const bin = this.bins[b];
      if (!bin || bin.size === 0) continue;
      let max = 0;
      for (const off of bin) max = Math.max(max, this.byStart.get(off)!);
      return max;
    }
    return 0;
  }

  /** Every free block as [offset, size]. */
  *freeBlocks(): Generator<[number, number]> {
    yield* this.byStart;
  }

  freeBlockCount(): number {
    return this.byStart.size;
  }

  private insert(off: number, size: number): void {
    this.byStart.set(off, size);
    this.byEnd.set(off + size, off);
    const b = binOf(size);
    while (this.bins.length <= b) this.bins.push(new Set());
    this.bins[b].add(off);
    this.freeTotal += size;
  }

  private remove(off: number, size: number): void {
    this.byStart.delete(off);
    this.byEnd.delete(off + size);
    this.bins[binOf(size)].delete(off);
    this.freeTotal -= size;
  }
}
