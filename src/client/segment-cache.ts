/**
 * Segment mappings, shared by every client in a process: each segment of each
 * store is mapped at most once read-only and at most once read-write, because
 * creating a large external ArrayBuffer costs about a millisecond and a view
 * over an existing one about 25 ns. The cache keeps a store's segments (and
 * their fds) while any client of that store is open in this process; after the
 * last one closes, a mapping lives as long as the process holds any view over
 * it (the ArrayBuffer finalizer unmaps), so a dead store's memory is not pinned
 * for the life of the process.
 */
import { TrellisError } from '../errors.js';
import { native } from '../native.js';
import type { SegmentInfo } from '../protocol/records.js';
import { askFds } from './fd-channel.js';

/**
 * One segment of a store known to this process: its fd, and its mappings,
 * each made on first use (a reader that never writes has no read-write one).
 */
export class SegmentMapping {
  private roBuffer: ArrayBuffer | null = null;
  rw: ArrayBuffer | null = null;
  /** Per 2 MiB chunk of `rw`: already faulted into this process (see populateWritable). */
  populated: Uint8Array | null = null;

  constructor(
    readonly id: number,
    readonly size: number,
    readonly fd: number,
  ) {}

  /** The read-only mapping that gets hand out views of. */
  get ro(): ArrayBuffer {
    this.roBuffer ??= native.map(this.fd, this.size, false);
    return this.roBuffer;
  }

  /** Whether `buffer` is this segment's read-only mapping (without making one). */
  isReadOnly(buffer: ArrayBufferLike): boolean {
    return this.roBuffer === buffer;
  }
}

const CHUNK = 2 * 1024 * 1024;

/**
 * Faults a block of the read-write mapping into this process before a
 * producer fills it, skipping the 2 MiB chunks done before: walking the page
 * tables of a range that is already mapped costs ~40 µs per MiB, as much as
 * the fill. A chunk the store punched since is simply faulted on write.
 */
export async function populateWritable(m: SegmentMapping, off: number, size: number): Promise<void> {
  const rw = writableMapping(m);
  if (!m.populated) m.populated = new Uint8Array(Math.ceil(m.size / CHUNK));
  const first = Math.floor(off / CHUNK);
  const last = Math.floor((off + size - 1) / CHUNK);
  let runStart = -1;
  const flush = async (endChunk: number) => {
    if (runStart < 0) return;
    const lo = Math.max(off, runStart * CHUNK);
    const hi = Math.min(off + size, endChunk * CHUNK);
    runStart = -1;
    if (hi > lo) await native.populateAsync(rw, lo, hi - lo);
  };
  for (let c = first; c <= last; c++) {
    if (m.populated[c]) {
      await flush(c);
      continue;
    }
    if (runStart < 0) runStart = c;
    // Only chunks the block covers whole count as done; edges may hold other blocks' untouched pages.
    if (c * CHUNK >= off && (c + 1) * CHUNK <= off + size) m.populated[c] = 1;
  }
  await flush(last + 1);
}

const stores = new Map<string, Map<number, SegmentMapping>>();
const inflight = new Map<string, Promise<void>>();
const users = new Map<string, number>();

/** A client of `storeId` opened in this process; pair it with `releaseStore`. */
export function retainStore(storeId: string): void {
  users.set(storeId, (users.get(storeId) ?? 0) + 1);
}

/** A client of `storeId` closed; after the last one, the segment fds are closed and the cache forgets them. */
export function releaseStore(storeId: string): void {
  const n = (users.get(storeId) ?? 0) - 1;
  if (n > 0) {
    users.set(storeId, n);
    return;
  }
  users.delete(storeId);
  // A fetch still in flight belongs to the closed clients; a new client must not wait on it.
  for (const key of [...inflight.keys()]) if (key.startsWith(`${storeId}:`)) inflight.delete(key);
  const known = stores.get(storeId);
  stores.delete(storeId);
  if (known) for (const m of known.values()) native.closeFd(m.fd);
}

export function mappingOf(storeId: string, seg: number): SegmentMapping | undefined {
  return stores.get(storeId)?.get(seg);
}

/** Maps every listed segment not yet mapped, asking the store for their fds over the fd channel. */
export async function ensureMapped(storeId: string, socketPath: string, token: string, segs: number[]): Promise<void> {
  if (!users.has(storeId)) throw new TrellisError('ERR_CLOSED', 'the client was closed');
  let known = stores.get(storeId);
  if (!known) {
    known = new Map();
    stores.set(storeId, known);
  }
  const waits: Promise<void>[] = [];
  const missing: number[] = [];
  for (const s of segs) {
    if (known.has(s)) continue;
    const key = `${storeId}:${s}`;
    const p = inflight.get(key);
    if (p) waits.push(p);
    else if (!missing.includes(s)) missing.push(s);
  }
  if (missing.length > 0) {
    const job = fetchSegments(storeId, known, socketPath, token, missing);
    for (const s of missing) inflight.set(`${storeId}:${s}`, job);
    waits.push(
      job.finally(() => {
        for (const s of missing) {
          const key = `${storeId}:${s}`;
          if (inflight.get(key) === job) inflight.delete(key);
        }
      }),
    );
  }
  await Promise.all(waits);
}

async function fetchSegments(
  storeId: string,
  known: Map<number, SegmentMapping>,
  socketPath: string,
  token: string,
  segs: number[],
): Promise<void> {
  const { reply, fds } = await askFds(socketPath, { token, segments: segs });
  try {
    // The last client of the store closed while the fds were on their way: keep none of them.
    if (stores.get(storeId) !== known) throw new TrellisError('ERR_CLOSED', 'the client was closed');
    const infos = reply.segments;
    if (infos.length !== fds.length) {
      throw new TrellisError('ERR_PROTOCOL', `fd channel sent ${fds.length} fds for ${infos.length} segments`);
    }
    infos.forEach((info, i) => {
      const fd = fds[i];
      const actual = native.fdSize(fd);
      if (actual !== info.size) {
        throw new TrellisError('ERR_PROTOCOL', `segment ${info.id} is ${actual} bytes, the store said ${info.size}`);
      }
      known.set(info.id, new SegmentMapping(info.id, info.size, fd));
      fds[i] = -1;
    });
  } finally {
    for (const fd of fds) if (fd >= 0) native.closeFd(fd);
  }
}

/**
 * Takes the segment fds that came with the hello (`fds[i]` for `infos[i]`),
 * checked like the fd channel's; they are mapped when a get first needs them.
 * Throws ERR_PROTOCOL on a size that does not match, keeping none of them.
 */
export function adoptSegments(storeId: string, infos: SegmentInfo[], fds: number[]): void {
  if (!users.has(storeId)) throw new TrellisError('ERR_CLOSED', 'the client was closed');
  const fresh: SegmentMapping[] = [];
  infos.forEach((info, i) => {
    const actual = native.fdSize(fds[i]);
    if (actual !== info.size) {
      throw new TrellisError('ERR_PROTOCOL', `segment ${info.id} is ${actual} bytes, the store said ${info.size}`);
    }
    fresh.push(new SegmentMapping(info.id, info.size, fds[i]));
  });
  let known = stores.get(storeId);
  if (!known) {
    known = new Map();
    stores.set(storeId, known);
  }
  for (const m of fresh) {
    // Another client of this store in this process knew it already: keep that one.
    if (known.has(m.id)) native.closeFd(m.fd);
    else known.set(m.id, m);
  }
}

/** The read-write mapping of a segment, created on first use by a producer. */
export function writableMapping(m: SegmentMapping): ArrayBuffer {
  if (!m.rw) m.rw = native.map(m.fd, m.size, true);
  return m.rw;
}

/**
 * Whether `buffer` is a read-only mapping of a store segment (what `get`
 * returns views over). Writing into one raises SIGSEGV, so code that hands
 * memory to a native writer (onnxruntime outputs) checks here first.
 */
export function isReadOnlyMapping(buffer: ArrayBufferLike): boolean {
  for (const known of stores.values()) for (const m of known.values()) if (m.isReadOnly(buffer)) return true;
  return false;
}
