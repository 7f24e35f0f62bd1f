/**
 * The store's shared memory: memfd segments of at most 4 GiB, created on
 * demand until the memory limit is reached, each with its own allocator.
 * Freed ranges are hole-punched so the OS gets the pages back, unless the
 * arena was reserved up front (then freed pages stay warm for reuse).
 *
 * Segments never strand free memory: when a block fits no segment and the
 * limit leaves no room for a new one, empty segments are released (pages
 * punched, fd closed) to make that room, so a blob of up to 4 GiB fits
 * whenever that many bytes are free in a segment or could be. A released
 * segment keeps its id (clients cache mappings by id; ids are never reused)
 * and is no longer handed out.
 */
import { TrellisError } from '../errors.js';
import { MAX_SEGMENT_SIZE, native } from '../native.js';
import type { BlobLocation, SegmentInfo } from '../protocol/records.js';
import { ALIGN, alignUp, SegmentAllocator } from './allocator.js';

const PAGE = 4096;
const SEGMENT_GRANULE = 2 * 1024 * 1024;
const HUGE_PAGE = 2 * 1024 * 1024;

export interface ArenaOptions {
  /** Total bytes the arena may hold. */
  limit: number;
  /** Size of each new segment (the last may be smaller); a larger object gets a segment of its own size. */
  segmentSize: number;
  /** Create every segment at start and fault all its pages in. */
  reserve: boolean;
  /** Label for /proc/PID/maps. */
  label: string;
  /**
   * How long freed memory stays warm before its pages go back to the OS
   * (0: at once). A block reused within this time costs no page faults.
   */
  punchDelayMs: number;
  /**
   * With `reserve`: back each segment with 2 MiB huge pages (hugetlbfs) when
   * the machine's pool (vm.nr_hugepages) can give all of it, else with normal
   * pages. Random reads of a large dataset then take a TLB miss per 2 MiB
   * instead of per 4 KiB (bench/loader.js, huge-page rows).
   */
  hugePages?: boolean;
}

export class Segment {
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly allocator: SegmentAllocator;
  /** Given back: its pages punched, its fd closed; nothing lives in it. */
  released = false;
  /** On hugetlbfs (Arena's hugePages). */
  hugePages = false;

  constructor(
    readonly id: number,
    readonly fd: number,
    readonly size: number,
  ) {
    this.buffer = native.map(fd, size, true);
    this.bytes = new Uint8Array(this.buffer);
    this.allocator = new SegmentAllocator(size);
  }

  info(): SegmentInfo {
    return { id: this.id, size: this.size };
  }
}

export class Arena {
  readonly segments: Segment[] = [];
  private used = 0;
  private closed = false;
  private punchTimer: NodeJS.Timeout | null = null;

  constructor(readonly opts: ArenaOptions) {
    if (opts.hugePages && !opts.reserve)
      throw new TrellisError('ERR_BAD_REQUEST', 'huge pages need a reserved arena (--reserve)');
    if (opts.reserve) {
      while (this.mappedBytes() < opts.limit) {
        const size = Math.min(opts.segmentSize, opts.limit - this.mappedBytes());
        const huge = opts.hugePages ? this.addHugeSegment(size) : null;
        if (huge) continue;
        const seg = this.addSegment(size);
        native.reserve(seg.fd, 0, seg.size);
        // fallocate gives the pages; touching them once here moves the first-touch
        // cost (large on virtual machines) out of the data path.
        native.populate(seg.buffer, 0, seg.size, true);
      }
    }
  }

  get memoryUsed(): number {
    return this.used;
  }

  mappedBytes(): number {
    let n = 0;
    for (const s of this.segments) if (!s.released) n += s.size;
    return n;
  }

  /** Segments in use (not released). */
  liveSegments(): Segment[] {
    return this.segments.filter((s) => !s.released);
  }

  residentBytes(): number {
    let n = 0;
    for (const s of this.segments) if (!s.released) n += native.residentBytes(s.fd);
    return n;
  }

  /** The largest block an allocation could get now: in a segment, or in a new one (empty ones released). */
  largestAllocatable(): number {
    let best = 0;
    let room = this.opts.limit - this.mappedBytes();
    for (const s of this.segments) {
      if (s.released) continue;
      best = Math.max(best, s.allocator.largestFree());
      if (!this.opts.reserve && s.allocator.usedBytes === 0) room += s.size;
    }
    return Math.max(best, Math.min(MAX_SEGMENT_SIZE, room - (room % ALIGN)));
  }

  /** 1 - largest free block / free bytes, over the memory not yet used; 0 means one free block. */
  fragmentation(): number {
    let free = 0;
    let largest = 0;
    for (const s of this.segments) {
      if (s.released) continue;
      free += s.allocator.freeBytes;
      largest = Math.max(largest, s.allocator.largestFree());
    }
    const unmapped = this.opts.limit - this.mappedBytes();
    if (unmapped > 0) {
      free += unmapped;
      largest = Math.max(largest, Math.min(unmapped, MAX_SEGMENT_SIZE));
    }
    return free === 0 ? 0 : 1 - largest / free;
  }

  /** Allocates a block or returns null when it cannot fit (the caller may spill and retry). */
  tryAlloc(size: number): BlobLocation | null {
    if (this.closed) throw new TrellisError('ERR_SHUTTING_DOWN', 'the arena is closed');
    const need = alignUp(Math.max(size, 1));
    if (need > MAX_SEGMENT_SIZE) {
      throw new TrellisError(
        'ERR_BAD_REQUEST',
        `a single blob is limited to ${MAX_SEGMENT_SIZE} bytes; split larger objects into several blobs`,
      );
    }
    if (this.used + need > this.opts.limit) return null;
    for (const s of this.segments) {
      if (s.released) continue;
      const off = s.allocator.alloc(need);
      if (off >= 0) return this.took(s, off, size, need);
    }
    let room = this.opts.limit - this.mappedBytes();
    if (room < need && !this.opts.reserve) room += this.releaseEmpty(need - room);
    if (room >= need) {
      const segSize = Math.min(
        MAX_SEGMENT_SIZE,
        room - (room % ALIGN),
        Math.max(this.opts.segmentSize, alignUp(need, SEGMENT_GRANULE)),
      );
      const s = this.addSegment(segSize);
      const off = s.allocator.alloc(need);
      if (off >= 0) return this.took(s, off, size, need);
    }
    return null;
  }

  free(loc: BlobLocation): void {
    const seg = this.segments[loc.seg];
    const need = alignUp(Math.max(loc.size, 1));
    const merged = seg.allocator.free(loc.off, need);
    this.used -= need;
    if (this.opts.reserve) return;
    if (this.opts.punchDelayMs > 0) {
      if (!this.punchTimer) {
        this.punchTimer = setTimeout(() => this.punchFree(), this.opts.punchDelayMs);
        this.punchTimer.unref();
      }
      return;
    }
    // Punch only whole pages that are free now and overlap the block just freed.
    const fstart = Math.floor(loc.off / PAGE) * PAGE;
    const lo = fstart >= merged.off ? fstart : alignUp(merged.off, PAGE);
    const fend = alignUp(loc.off + need, PAGE);
    const mend = merged.off + merged.size;
    const hi = fend <= mend ? fend : Math.floor(mend / PAGE) * PAGE;
    if (hi > lo) native.punchHole(seg.fd, lo, hi - lo);
  }

  /** Gives the whole pages of every free block back to the OS. */
  punchFree(): void {
    if (this.punchTimer) clearTimeout(this.punchTimer);
    this.punchTimer = null;
    if (this.closed) return;
    for (const s of this.segments) {
      if (s.released) continue;
      for (const [off, size] of s.allocator.freeBlocks()) {
        const lo = alignUp(off, PAGE);
        const hi = Math.floor((off + size) / PAGE) * PAGE;
        if (hi > lo) native.punchHole(s.fd, lo, hi - lo);
      }
    }
  }

  view(loc: BlobLocation): Uint8Array {
    return new Uint8Array(this.segments[loc.seg].buffer, loc.off, loc.size);
  }

  segment(id: number): Segment | undefined {
    return this.segments[id];
  }

  close(): void {
    if (this.closed) return;
    if (this.punchTimer) clearTimeout(this.punchTimer);
    this.closed = true;
    for (const s of this.segments) if (!s.released) native.closeFd(s.fd);
  }

  /**
   * Releases empty segments until `short` bytes of the limit are unmapped,
   * or none when the empty ones together cannot give that much (no churn for
   * an allocation that would fail anyway). Returns the bytes released.
   */
  private releaseEmpty(short: number): number {
    const empty = this.segments.filter((s) => !s.released && s.allocator.usedBytes === 0);
    let total = 0;
    for (const s of empty) total += s.size;
    if (total < short) return 0;
    let freed = 0;
    for (const s of empty) {
      if (freed >= short) break;
      native.punchHole(s.fd, 0, s.size);
      native.closeFd(s.fd);
      s.released = true;
      freed += s.size;
    }
    return freed;
  }

  private took(s: Segment, off: number, size: number, need: number): BlobLocation {
    this.used += need;
    return { seg: s.id, off, size };
  }

  private addSegment(size: number, fd?: number): Segment {
    const id = this.segments.length;
    if (id > 0xffff) throw new TrellisError('ERR_OUT_OF_MEMORY', 'the arena has created 65536 segments, its most');
    const seg = new Segment(id, fd ?? native.memfdCreate(`${this.opts.label}:${id}`, size), size);
    this.segments.push(seg);
    return seg;
  }

  /**
   * A reserved segment on huge pages, or null when the pool cannot give all
   * of it (or the size is not whole huge pages): allocating every page before
   * the segment is mapped is what keeps a short pool from faulting (SIGBUS)
   * later. A reserved arena never punches holes, so the pages stay.
   */
  private addHugeSegment(size: number): Segment | null {
    if (size % HUGE_PAGE !== 0) return null;
    let fd = -1;
    try {
      fd = native.memfdCreate(`${this.opts.label}:${this.segments.length}`, size, true);
      native.reserve(fd, 0, size);
    } catch {
      if (fd >= 0) native.closeFd(fd);
      return null;
    }
    const seg = this.addSegment(size, fd);
    seg.hugePages = true;
    return seg;
  }

  /** Bytes of the arena on huge pages. */
  hugePageBytes(): number {
    let n = 0;
    for (const s of this.segments) if (!s.released && s.hugePages) n += s.size;
    return n;
  }
}
