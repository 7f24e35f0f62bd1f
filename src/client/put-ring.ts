/**
 * The client's half of the put ring (layout: protocol/put-ring.ts): a put of
 * a small unnamed Blob or Tensor copies its bytes into this client's leased
 * slab, writes a record into its ring and is done, with no request. The
 * store takes the record in before it answers any request from anyone, so an
 * id handed back here is visible to every later get, delete or list.
 *
 * The order that makes a record complete: bytes, then the record's words,
 * then its COMMIT word (Atomics.store, seq_cst), then a look at the ring's
 * SLEEP word; the store sets SLEEP and looks at COMMIT again before it stops
 * polling, so one of the two sees the other and no record waits unseen.
 */

import type { EncodedValue } from '../codecs/codec.js';
import { TrellisError } from '../errors.js';
import { native } from '../native.js';
import { DTYPE_CODES } from '../protocol/fast-directory.js';
import type { Frame } from '../protocol/frame.js';
import { decodeReply, type RequestBody } from '../protocol/messages.js';
import {
  H,
  LEASE_IDS,
  MAX_RING_DIMS,
  R,
  RING_BYTES,
  RING_KIND_BLOB,
  RING_KIND_TENSOR,
  RING_MAX_OBJECT,
  RING_RECORDS,
  recordBase,
} from '../protocol/put-ring.js';
import { askFds } from './fd-channel.js';
import { ensureMapped, mappingOf, populateWritable, writableMapping } from './segment-cache.js';

const DTYPE_INDEX = new Map<string, number>(DTYPE_CODES.map((d, i) => [d, i]));
const ALIGN = 64;

/** Sends a request on the client's request connection (IpcChannel.request): a lease or a drain (answered), or the doorbell (not). */
export type RingCall = (body: RequestBody<'lease' | 'ring'>, payload: undefined, answered: boolean) => Promise<Frame>;

interface Lease {
  readonly number: number;
  readonly size: number;
  /** Writable view of the slab. */
  readonly bytes: Uint8Array;
  readonly seg: number;
  /** The first id counter of the lease. */
  readonly first: number;
  cursor: number;
  next: number;
  readonly end: number;
}

export class PutRing {
  private seq = 1;
  private lease: Lease | null = null;
  private refilling: Promise<void> | null = null;
  /** Bytes of the last slab: an object larger than that goes by the socket. */
  private slabSize = 0;

  private constructor(
    private readonly words: Int32Array,
    private readonly call: RingCall,
    private readonly storeId: string,
    private readonly socketPath: string,
    private readonly token: string,
    /** "o" + the store's instance id in hex. */
    private readonly prefix: string,
  ) {}

  /** Asks the store for this connection's ring over the fd channel and maps it; null when the store offers none. */
  static async open(
    socketPath: string,
    token: string,
    storeId: string,
    instanceId: number,
    call: RingCall,
  ): Promise<PutRing | null> {
    const { reply, fds } = await askFds(socketPath, { token, segments: [], ring: true });
    try {
      const size = reply.ring;
      if (size === undefined) return null;
      if (size !== RING_BYTES || fds.length !== 1 || native.fdSize(fds[0]) !== RING_BYTES) {
        throw new TrellisError('ERR_PROTOCOL', 'the put ring has another layout than this client knows');
      }
      const prefix = `o${instanceId.toString(16).padStart(4, '0')}`;
      const ring = new PutRing(
        new Int32Array(native.map(fds[0], RING_BYTES, true)),
        call,
        storeId,
        socketPath,
        token,
        prefix,
      );
      await ring.refill(0);
      return ring;
    } finally {
      // The mapping outlives its fd.
      for (const fd of fds) native.closeFd(fd);
    }
  }

  /** Whether a value can go by ring at all (else by the socket). */
  static accepts(enc: EncodedValue): boolean {
    if (enc.size > RING_MAX_OBJECT) return false;
    if (enc.typename === 'Blob') {
      for (const _ in enc.meta) return false;
      return true;
    }
    if (enc.typename !== 'Tensor') return false;
    const { dtype, shape, ...rest } = enc.meta as { dtype?: unknown; shape?: unknown };
    for (const _ in rest) return false;
    return typeof dtype === 'string' && DTYPE_INDEX.has(dtype) && Array.isArray(shape) && shape.length <= MAX_RING_DIMS;
  }

  /**
   * Puts an accepted value; returns its id, or undefined when the ring or the
   * lease has no room now (refill, then put again).
   */
  put(enc: EncodedValue): string | undefined {
    const L = this.lease;
    if (L === null) return undefined;
    const tensor = enc.typename === 'Tensor';
    const size = enc.size;
    const need = Math.ceil(Math.max(size, 1) / ALIGN) * ALIGN;
    const ids = tensor ? 2 : 1;
    const seq = this.seq;
    const w = this.words;
    if (L.cursor + need > L.size || L.next + ids > L.end) return undefined;
    if (((seq - 1 - Atomics.load(w, H.TAIL)) | 0) >= RING_RECORDS) return undefined;
    const dst = L.bytes.subarray(L.cursor, L.cursor + size);
    if (enc.contiguous) dst.set(enc.contiguous);
    else enc.write(dst);
    const b = recordBase(seq);
    const counter = L.next;
    if (tensor) {
      const { dtype, shape } = enc.meta as { dtype: string; shape: number[] };
      w[b + R.KIND] = RING_KIND_TENSOR;
      w[b + R.DTYPE] = DTYPE_INDEX.get(dtype)!;
      w[b + R.NDIM] = shape.length;
      for (let i = 0; i < MAX_RING_DIMS; i++) w[b + R.DIMS + i] = i < shape.length ? shape[i] : 0;
    } else {
      w[b + R.KIND] = RING_KIND_BLOB;
      w[b + R.DTYPE] = 0;
      w[b + R.NDIM] = 0;
      for (let i = 0; i < MAX_RING_DIMS; i++) w[b + R.DIMS + i] = 0;
    }
    w[b + R.LEASE] = L.number;
    w[b + R.OFF] = L.cursor;
    w[b + R.SIZE] = size;
    w[b + R.COUNTER_HI] = Math.floor(counter / 0x1_0000_0000);
    w[b + R.COUNTER_LO] = counter >>> 0;
    Atomics.store(w, b + R.COMMIT, seq | 0);
    this.seq = seq + 1;
    L.cursor += need;
    L.next = counter + ids;
    // The store stopped polling: wake it (once; the next puts see SLEEP 0).
    if (Atomics.load(w, H.SLEEP) === 1 && Atomics.compareExchange(w, H.SLEEP, 1, 0) === 1) {
      this.call({ t: 'ring' }, undefined, false).catch(() => {});
    }
    return this.prefix + (counter + ids - 1).toString(16).padStart(12, '0');
  }

  /**
   * Whether `id` came from this ring's current lease while some record of it
   * is not taken in yet (the store took in every record of a lease before it
   * granted the next).
   */
  undrained(id: string): boolean {
    const L = this.lease;
    if (L === null || ((this.seq - 1 - Atomics.load(this.words, H.TAIL)) | 0) <= 0) return false;
    if (id.length !== 17 || !id.startsWith(this.prefix)) return false;
    const counter = Number.parseInt(id.slice(5), 16);
    return counter >= L.first && counter < L.next;
  }

  /** Resolves once the store took in every record committed so far (a `ring` request it answers after its drain). */
  async flush(): Promise<void> {
    decodeReply('ring', (await this.call({ t: 'ring' }, undefined, true)).header);
  }

  /** Whether an object of `size` bytes fits a slab at all (else it goes by the socket). */
  fits(size: number): boolean {
    return Math.ceil(Math.max(size, 1) / ALIGN) * ALIGN <= this.slabSize;
  }

  /**
   * Makes room for a put of `size` bytes: waits for the store to drain a
   * full ring, or leases a new slab and id block (the store takes the old
   * slab's unused tail back). Concurrent callers share one refill.
   */
  async refill(size: number): Promise<void> {
    while (this.refilling !== null) await this.refilling;
    if (this.lease !== null && this.hasRoom(this.lease, size)) {
      if (((this.seq - 1 - Atomics.load(this.words, H.TAIL)) | 0) < RING_RECORDS) return;
    }
    this.refilling = this.doRefill(size).finally(() => {
      this.refilling = null;
    });
    return this.refilling;
  }

  private hasRoom(L: Lease, size: number): boolean {
    return L.cursor + Math.ceil(Math.max(size, 1) / ALIGN) * ALIGN <= L.size && L.next + 2 <= L.end;
  }

  private async doRefill(size: number): Promise<void> {
    if (((this.seq - 1 - Atomics.load(this.words, H.TAIL)) | 0) >= RING_RECORDS) {
      await this.flush();
    }
    if (this.lease !== null && this.hasRoom(this.lease, size)) return;
    // A lease request ends the lease before, whether or not a new one is granted.
    this.lease = null;
    const r = decodeReply('lease', (await this.call({ t: 'lease' }, undefined, true)).header);
    if (r.ids > LEASE_IDS || r.slab.size < ALIGN) throw new TrellisError('ERR_PROTOCOL', 'the store leased no room');
    await ensureMapped(this.storeId, this.socketPath, this.token, [r.slab.seg]);
    const m = mappingOf(this.storeId, r.slab.seg);
    if (!m) throw new TrellisError('ERR_INTERNAL', `segment ${r.slab.seg} is not mapped`);
    // One syscall off the main thread instead of a page fault per 4 KiB put.
    await populateWritable(m, r.slab.off, r.slab.size);
    this.slabSize = r.slab.size;
    this.lease = {
      number: r.lease,
      size: r.slab.size,
      bytes: new Uint8Array(writableMapping(m), r.slab.off, r.slab.size),
      seg: r.slab.seg,
      first: r.first,
      cursor: 0,
      next: r.first,
      end: r.first + r.ids,
    };
  }
}
