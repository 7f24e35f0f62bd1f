/**
 * The store's half of the put ring (layout: protocol/put-ring.ts): every
 * client's ring, its current lease (a slab of the arena and a block of ids),
 * and the drain that turns committed records into sealed objects.
 *
 * When records are taken in. Before the store answers ANY request (every
 * client's, IPC or RPC: StoreServer.execute drains first), so whatever a
 * client put before it sent or told anything is seen by every later request;
 * on a doorbell; and every POLL_MS while a ring keeps bringing records. A
 * poll that finds nothing sets the ring's SLEEP word and looks once more:
 * either that look sees a record committed meanwhile, or its client sees
 * SLEEP and rings (seq_cst Atomics on both sides).
 *
 * Trust. A client owns its slab and its ring, nothing else. Every record is
 * read once into locals and checked (kind, dtype, shape against size, offset
 * at the slab's cursor and inside it, ids next in the lease); a record that
 * breaks a rule fails its client (ERR_RING_RECORD), keeps the records before
 * it, and touches no other memory. Records are placed back to back, so
 * objects never overlap and each is freed on its own.
 *
 * Slab memory. A slab is one block of the arena's allocator; each object
 * carved from it is an ordinary entry whose block goes back to the allocator
 * alone when it is freed or spilled (merging with its neighbours), and the
 * unused tail goes back when the lease ends (a new lease, the connection's
 * end, a failed ring). Per-object rather than a refcount per slab: one
 * long-lived object then keeps 64 bytes, not its whole slab, and spill and
 * delete need nothing new.
 */
import { TrellisError } from '../errors.js';
import { native } from '../native.js';
import { DTYPE_CODES } from '../protocol/fast-directory.js';
import type { ReplyOf } from '../protocol/messages.js';
import {
  DTYPE_BYTES,
  H,
  LEASE_IDS,
  MAX_RING_DIMS,
  R,
  RECORD_WORDS,
  RING_BYTES,
  RING_KIND_BLOB,
  RING_KIND_TENSOR,
  RING_MAX_OBJECT,
  recordBase,
} from '../protocol/put-ring.js';
import type { BlobLocation } from '../protocol/records.js';
import { ALIGN, alignUp } from './allocator.js';
import type { Arena } from './arena.js';
import type { IdAllocator } from './ids.js';
import type { Entry, ObjectTable } from './object-table.js';

/**
 * How often a ring that keeps bringing records is looked at. 4 ms measured
 * 2.06x redis SET against 1.31x at 1 ms (bench/baselines.js, store and client
 * on one CPU): fewer wake-ups, each taking a larger batch. Nothing waits on
 * it: any request drains first.
 */
const POLL_MS = 4;
/** Largest slab: ~1000 puts of 1 KiB per lease round trip. */
const MAX_SLAB = 1024 * 1024;
/**
 * A client's first slab; each next one doubles, up to the largest. A client
 * that puts little holds little (64 KiB), one that keeps putting reaches 1 MiB
 * after four more leases. At least the largest ring object, so any fits.
 */
const FIRST_SLAB = 64 * 1024;

interface Lease {
  readonly number: number;
  readonly slab: BlobLocation;
  /** Bytes of the slab taken by records (aligned): the next record goes here. */
  cursor: number;
  /** The next id counter a record must use, and one past the last leased. */
  next: number;
  readonly end: number;
}

interface Ring {
  readonly conn: number;
  readonly fd: number;
  readonly words: Int32Array;
  /** The sequence number of the next record to take in. */
  seq: number;
  lease: Lease | null;
  /** Leases granted so far: the next slab's size grows with them. */
  leases: number;
  failed: boolean;
}

/** What the store does with what the rings bring. */
export interface RingHost {
  /** A record became object `e` with `bytes` of blob data (the traffic figures count it). */
  put(e: Entry, bytes: number): void;
  /** Client `conn` broke its ring's rules: fail its connection with `err`. */
  fail(conn: number, err: TrellisError): void;
}

export class PutRings {
  private readonly rings = new Map<number, Ring>();
  private readonly awake = new Set<Ring>();
  private readonly failures: { conn: number; err: TrellisError }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private leases = 0;
  private closed = false;
  /** Objects that arrived by ring. */
  puts = 0;
  /** Bytes of slabs leased and not yet taken by records. */
  private unused = 0;
  /** The largest slab this store leases (a multiple of 64). */
  readonly slabBytes: number;

  constructor(
    private readonly label: string,
    private readonly table: ObjectTable,
    private readonly arena: Arena,
    private readonly ids: IdAllocator,
    memoryLimit: number,
    private readonly host: RingHost,
  ) {
    // A sixteenth of a small store at most, so tests' 64 KiB stores still fit a lease and their objects.
    const slab = Math.min(MAX_SLAB, Math.floor(memoryLimit / 16));
    this.slabBytes = Math.max(ALIGN, slab - (slab % ALIGN));
  }

  /** Slab bytes leased to clients and not yet holding objects. */
  get leasedBytes(): number {
    return this.unused;
  }

  /** The ring of connection `conn`, created on first ask; its fd is the store's (send a copy, do not close). */
  ringFd(conn: number): number {
    let r = this.rings.get(conn);
    if (!r) {
      const fd = native.memfdCreate(`${this.label}:ring:${conn}`, RING_BYTES);
      const words = new Int32Array(native.map(fd, RING_BYTES, true));
      // Not polled until the first doorbell.
      words[H.SLEEP] = 1;
      r = { conn, fd, words, seq: 1, lease: null, leases: 0, failed: false };
      this.rings.set(conn, r);
    }
    return r.fd;
  }

  /**
   * A new slab and id block for `conn`'s ring; the lease before ends (its
   * unused tail goes back). One slab per client at a time is its quota, and
   * the slab counts in the store's memory from now on: ERR_OUT_OF_MEMORY
   * when it does not fit, even after spilling.
   */
  lease(conn: number): ReplyOf<'lease'> {
    const r = this.rings.get(conn);
    if (!r) throw new TrellisError('ERR_BAD_REQUEST', 'no put ring: ask for one (fds with ring) before a lease');
    if (r.failed) throw new TrellisError('ERR_RING_RECORD', 'this connection broke its put ring');
    // The request was preceded by a drain: every record of the lease before is in.
    this.endLease(r);
    const slab = this.table.allocateSlab(Math.min(this.slabBytes, FIRST_SLAB * 2 ** Math.min(r.leases, 8)));
    r.leases++;
    const first = this.ids.allocateBlock(LEASE_IDS);
    this.leases = this.leases >= 0x7fff_ffff ? 1 : this.leases + 1;
    const number = this.leases;
    r.lease = { number, slab, cursor: 0, next: first, end: first + LEASE_IDS };
    this.unused += slab.size;
    return { slab, lease: number, first, ids: LEASE_IDS };
  }

  /** Takes in every ring's committed records. Cheap when there is nothing: one load per ring. */
  drainAll(): void {
    if (this.rings.size === 0) return;
    for (const r of this.rings.values()) this.drain(r);
    this.settleFailures();
  }

  /** The doorbell of `conn`: its ring is polled until it runs dry. */
  wake(conn: number): void {
    const r = this.rings.get(conn);
    if (!r || r.failed) return;
    this.awake.add(r);
    if (this.timer === null) this.timer = setTimeout(this.poll, POLL_MS);
  }

  /** The connection went (a kill -9 included): its committed records stay, its lease goes back, its ring goes. */
  drop(conn: number): void {
    const r = this.rings.get(conn);
    if (!r || this.closed) return;
    this.drain(r);
    this.endLease(r);
    this.awake.delete(r);
    this.rings.delete(conn);
    native.closeFd(r.fd);
    // Failures found here need no failing: the connection is gone.
    this.failures.length = 0;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const r of this.rings.values()) native.closeFd(r.fd);
    this.rings.clear();
    this.awake.clear();
  }

  private readonly poll = (): void => {
    this.timer = null;
    for (const r of this.awake) {
      if (this.drain(r)) continue;
      Atomics.store(r.words, H.SLEEP, 1);
      if (this.drain(r)) Atomics.store(r.words, H.SLEEP, 0);
      else this.awake.delete(r);
    }
    this.settleFailures();
    if (this.awake.size > 0) this.timer = setTimeout(this.poll, POLL_MS);
  };

  /** Takes in one ring's committed records, in order; true when there was any. */
  private drain(r: Ring): boolean {
    if (r.failed) return false;
    const w = r.words;
    let seq = r.seq;
    while (Atomics.load(w, recordBase(seq) + R.COMMIT) === (seq | 0)) {
      try {
        this.take(r, recordBase(seq));
      } catch (e) {
        this.failRing(r, e instanceof TrellisError ? e : new TrellisError('ERR_INTERNAL', String(e)));
        break;
      }
      seq++;
    }
    if (seq === r.seq) return false;
    r.seq = seq;
    Atomics.store(w, H.TAIL, (seq - 1) | 0);
    return true;
  }

  /** One committed record: checked whole, then made an object. */
  private take(r: Ring, base: number): void {
    const w = r.words;
    // Each word read once: the client may change them while we look.
    const kind = w[base + R.KIND];
    const dtype = w[base + R.DTYPE];
    const ndim = w[base + R.NDIM];
    const leaseNo = w[base + R.LEASE];
    const off = w[base + R.OFF];
    const size = w[base + R.SIZE];
    const hi = w[base + R.COUNTER_HI];
    const lo = w[base + R.COUNTER_LO];
    const dims: number[] = [];
    for (let i = 0; i < MAX_RING_DIMS; i++) dims.push(w[base + R.DIMS + i]);
    for (let i = R.DIMS + MAX_RING_DIMS; i < RECORD_WORDS; i++) {
      if (w[base + i] !== 0) throw bad(`reserved word ${i} is ${w[base + i]}, not 0`);
    }
    const L = r.lease;
    if (L === null) throw bad('a record came before any lease');
    if (leaseNo !== L.number) throw bad(`the record names lease ${leaseNo}; the client's lease is ${L.number}`);
    if (off !== L.cursor) throw bad(`the record is at slab offset ${off}; the slab's cursor is ${L.cursor}`);
    if (size < 0 || size > RING_MAX_OBJECT) throw bad(`size ${size} is outside [0, ${RING_MAX_OBJECT}]`);
    const need = alignUp(Math.max(size, 1));
    if (off + need > L.slab.size) throw bad(`${size} bytes at ${off} pass the end of the ${L.slab.size}-byte slab`);
    if (hi < 0) throw bad(`id counter high word ${hi} is negative`);
    const counter = hi * 0x1_0000_0000 + (lo >>> 0);
    const idCount = kind === RING_KIND_TENSOR ? 2 : 1;
    if (counter !== L.next || counter + idCount > L.end) {
      throw bad(`id counter ${counter} is not the lease's next (${L.next}, ${L.end - L.next} left)`);
    }
    let tensor: { dtype: string; shape: number[] } | null = null;
    if (kind === RING_KIND_BLOB) {
      if (dtype !== 0 || ndim !== 0 || dims.some((d) => d !== 0)) throw bad('a Blob record has dtype, ndim and dims 0');
    } else if (kind === RING_KIND_TENSOR) {
      const name = DTYPE_CODES[dtype];
      if (name === undefined) throw bad(`dtype code ${dtype} is unknown`);
      if (ndim < 0 || ndim > MAX_RING_DIMS) throw bad(`ndim ${ndim} is outside [0, ${MAX_RING_DIMS}]`);
      let n = 1;
      for (let i = 0; i < MAX_RING_DIMS; i++) {
        if (i < ndim ? dims[i] < 0 : dims[i] !== 0) throw bad(`dimension ${i} is ${dims[i]}`);
        if (i < ndim) n *= dims[i];
      }
      if (n * DTYPE_BYTES[dtype] !== size) {
        throw bad(`a ${name} tensor of shape [${dims.slice(0, ndim)}] is not ${size} bytes`);
      }
      tensor = { dtype: name, shape: dims.slice(0, ndim) };
    } else throw bad(`kind ${kind} is neither Blob (1) nor Tensor (2)`);
    const e = this.table.adoptRing({ seg: L.slab.seg, off: L.slab.off + off, size }, counter, tensor);
    L.cursor = off + need;
    L.next = counter + idCount;
    this.unused -= need;
    this.puts++;
    this.host.put(e, size);
  }

  /** Gives back the part of the slab no record took. */
  private endLease(r: Ring): void {
    const L = r.lease;
    if (L === null) return;
    r.lease = null;
    const tail = L.slab.size - L.cursor;
    this.unused -= tail;
    if (tail > 0) this.arena.free({ seg: L.slab.seg, off: L.slab.off + L.cursor, size: tail });
  }

  private failRing(r: Ring, err: TrellisError): void {
    r.failed = true;
    this.endLease(r);
    this.awake.delete(r);
    this.failures.push({ conn: r.conn, err });
  }

  /** Fails the clients whose rings broke, once no drain is under way (failing closes their connections). */
  private settleFailures(): void {
    while (this.failures.length > 0) {
      const f = this.failures.pop()!;
      this.host.fail(f.conn, f.err);
    }
  }
}

function bad(why: string): TrellisError {
  return new TrellisError('ERR_RING_RECORD', `bad put ring record: ${why}`);
}
