import { decodeNeedsArrow, loadArrowCodec } from '../codecs/arrow-loader.js';
import { ARROW_TYPENAME, type EncodedValue } from '../codecs/codec.js';
import {
  type ArrayOf,
  DTYPES,
  type DType,
  elementCount,
  isDType,
  TENSOR_TYPENAME,
  type TypedArray,
} from '../codecs/tensor.js';
import { decodeRecord, type StoreValue } from '../codecs/value.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { native } from '../native.js';
import type { Frame } from '../protocol/frame.js';
import { decodeReply, isObjectId, type ReplyOf, type RequestBody } from '../protocol/messages.js';
import type { ObjectRecord } from '../protocol/records.js';
import { ClientCommon, type PutOptions, putFields, type SealOptions, sealFields } from './client-common.js';
import { type FastPin, FastReader } from './fast-reader.js';
import { handshake } from './handshake.js';
import { IpcChannel } from './ipc-channel.js';
import { PutRing, type RingCall } from './put-ring.js';
import {
  adoptSegments,
  ensureMapped,
  isReadOnlyMapping,
  mappingOf,
  populateWritable,
  releaseStore,
  retainStore,
  writableMapping,
} from './segment-cache.js';

export type { PutValue, StoredObject, StoreValue } from '../codecs/value.js';
export { BLOB_TYPENAME } from '../protocol/messages.js';
export type { ObjectSpecInput, PutOptions, SealOptions } from './client-common.js';

/** Blobs from this size on are pre-faulted into the producer's mapping by createBlob. */
const POPULATE_MIN = 1024 * 1024;
/**
 * Small puts by the socket before the put ring opens: a slab holds 64 KiB to
 * 1 MiB of the store's memory for as long as the client is open, so a client that
 * puts a few objects never takes one; one that keeps putting pays ~32 round
 * trips before its puts take none.
 */
const RING_AFTER = 32;
/** Segments mapped in the background at connect. */
const PREFETCH_SEGMENTS = 8;

export interface ConnectOptions {
  /** Path of the store's UNIX socket (default $TRELLIS_SOCKET or /tmp/trellis.sock). */
  socket?: string;
  /** Label for this client in the store's logs. */
  name?: string;
  /** Connect and handshake timeout (default 10 s). */
  timeoutMs?: number;
  /**
   * Put small unnamed Blobs and Tensors through the put ring, with no round
   * trip, once the store offers it (default true): from the 33rd such put on.
   * The ring then holds one slab of the store's arena (64 KiB to 1 MiB) for
   * this client while it is open.
   */
  putRing?: boolean;
}

interface Held {
  record: ObjectRecord;
  count: number;
  /** Held through the fast path: this pin, not a store reference. */
  fast: FastPin | null;
}

/** A blob being written in place; `buffer` is writable until `seal` or `abort`. */
export interface BlobWriter {
  readonly id: string;
  readonly buffer: Uint8Array;
  /** Makes the blob immutable and returns its id (the same as `id`). */
  seal(opts?: SealOptions): Promise<string>;
  /** Frees the blob. */
  abort(): Promise<void>;
}

/** A tensor being written in place; `data` is writable until `seal` or `abort`. */
export interface TensorWriter<T extends TypedArray = TypedArray> {
  readonly dtype: DType;
  readonly shape: number[];
  readonly data: T;
  /** Makes the tensor immutable and returns the tensor's id. */
  seal(opts?: SealOptions): Promise<string>;
  abort(): Promise<void>;
}

export class TrellisClient extends ClientCommon {
  private readonly held = new Map<string, Held>();
  private readonly fetching = new Map<string, Promise<ObjectRecord>>();
  /** This client speaks to its store over the UNIX socket (views over shared memory). */
  readonly transport = 'ipc' as const;
  /** The store's shared directory and this client's pin page, once mapped (null until then, or if the store has none). */
  private fast: FastReader | null = null;
  /**
   * Resolves once gets can take the fast path (true), or when they cannot
   * (false: the store offers none, or the client closed first). Gets never
   * wait for it; benchmarks and tests that mean to measure the fast path do.
   */
  fastPath: Promise<boolean> = Promise.resolve(false);
  /** The put ring, once leased (null until then, or when the store offers none). */
  private ring: PutRing | null = null;
  /** Opening the ring, started by the first small put (null: not yet; resolves either way). */
  private ringOpening: Promise<void> | null = null;
  private readonly ringWanted: boolean;
  private smallPuts = 0;

  private constructor(
    private readonly channel: IpcChannel,
    readonly socketPath: string,
    private readonly token: string,
    /** The store's random id for this run; segment mappings are keyed by it. */
    readonly storeId: string,
    readonly instanceId: number,
    private readonly inlineLimit: number,
    putRing: boolean,
  ) {
    super();
    this.ringWanted = putRing;
    retainStore(storeId);
  }

  /**
   * Whether `view` lies over memory a `get` handed out in this process (a
   * read-only mapping of a store segment). Writing into such a view kills the
   * process with SIGSEGV, so code that gives memory to a native writer
   * (onnxruntime outputs) checks here first.
   *
   * @example
   *   if (TrellisClient.isReadOnlyView(t.data)) throw new Error('not writable');
   */
  static isReadOnlyView(view: ArrayBufferView | ArrayBufferLike): boolean {
    return isReadOnlyMapping(ArrayBuffer.isView(view) ? view.buffer : view);
  }

  /** @internal use connect() */
  static async open(opts: ConnectOptions): Promise<TrellisClient> {
    const socket = opts.socket ?? process.env.TRELLIS_SOCKET ?? '/tmp/trellis.sock';
    if (typeof socket !== 'string' || socket.length === 0) throw invalidParameter('socket', 'a socket path', socket);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > 0x7fff_ffff) {
      throw invalidParameter('timeoutMs', 'a positive integer of milliseconds', timeoutMs);
    }
    const a = await handshake(socket, opts.name ?? `pid ${process.pid}`, timeoutMs);
    const { hello } = a;
    const client = new TrellisClient(
      IpcChannel.adopt(a.socket),
      socket,
      hello.token,
      hello.storeId,
      hello.instanceId,
      hello.inlineLimit,
      opts.putRing ?? true,
    );
    try {
      adoptSegments(hello.storeId, hello.attached?.segments ?? [], a.segmentFds);
    } catch (e) {
      for (const fd of a.segmentFds) native.closeFd(fd);
      if (a.fastFds) for (const fd of a.fastFds) native.closeFd(fd);
      await client.close();
      throw e;
    }
    if (a.fastFds && hello.attached?.fastpath) {
      // Mapped now: the first get of a published object needs nothing more.
      try {
        client.fast = FastReader.map(...a.fastFds, hello.attached.fastpath, hello.storeId, hello.instanceId);
        client.fastPath = Promise.resolve(true);
      } catch {
        // a layout this client does not know: gets use the socket
      } finally {
        for (const fd of a.fastFds) native.closeFd(fd);
      }
      return client;
    }
    // A store that sent no fds (its socket has none to send on): the fd
    // channel serves them, in the background; gets use the socket meanwhile.
    client.fastPath = FastReader.open(socket, hello.token, hello.storeId, hello.instanceId).then(
      (r) => {
        if (client.channel.closed) {
          r.close();
          return false;
        }
        client.fast = r;
        return true;
      },
      () => false,
    );
    const segments = Math.min(hello.segments, PREFETCH_SEGMENTS);
    if (segments > 0) {
      ensureMapped(
        client.storeId,
        socket,
        client.token,
        Array.from({ length: segments }, (_, i) => i),
      ).catch(() => {});
    }
    return client;
  }

  // ---- put --------------------------------------------------------------

  protected async putEncoded(enc: EncodedValue, opts: PutOptions): Promise<string> {
    // Unnamed small puts go by ring (named or persisted ones keep their round trip: the name is checked first).
    if (opts.name === undefined && opts.persist !== true && PutRing.accepts(enc)) {
      const id = await this.ringPut(enc);
      if (id !== undefined) return id;
    }
    const object = { typename: enc.typename, meta: enc.meta, members: [] };
    if (enc.size <= this.inlineLimit) {
      let payload = enc.contiguous;
      if (!payload) {
        payload = new Uint8Array(enc.size);
        enc.write(payload);
      }
      const f = await this.call({ t: 'put', object, ...putFields(opts) }, payload);
      return f.id;
    }
    const w = await this.createBlob(enc.size);
    try {
      enc.write(w.buffer);
    } catch (e) {
      await w.abort().catch(() => {});
      throw e;
    }
    const f = await this.call({ t: 'seal', id: w.id, object, ...putFields(opts) });
    return f.id;
  }

  /**
   * A put through the ring, or undefined when it must go by the socket (no
   * ring yet: the first small put starts opening one; no room even after a
   * refill; the refill failed, e.g. the store has no room for a slab).
   */
  private ringPut(enc: EncodedValue): string | undefined | Promise<string | undefined> {
    this.checkOpen();
    if (this.channel.error) throw this.channel.error;
    const r = this.ring;
    if (r === null) {
      if (this.ringOpening === null && this.ringWanted && ++this.smallPuts >= RING_AFTER) this.openRing();
      return undefined;
    }
    const id = r.put(enc);
    if (id !== undefined || !r.fits(enc.size)) return id;
    return r.refill(enc.size).then(
      () => {
        this.checkOpen();
        if (this.channel.error) throw this.channel.error;
        return r.put(enc);
      },
      () => undefined,
    );
  }

  private openRing(): void {
    const call: RingCall = (body, payload, answered) => this.channel.request(body, payload, answered);
    this.ringOpening = PutRing.open(this.socketPath, this.token, this.storeId, this.instanceId, call).then(
      (r) => {
        if (!this.channel.closed) this.ring = r;
      },
      () => {},
    );
  }

  /**
   * Allocates a blob in the store and maps it writable into this process, for
   * producers that write in place (a loader gathering a batch, a model writing
   * its output). Nothing is copied: the bytes written are the bytes readers see.
   */
  async createBlob(nbytes: number): Promise<BlobWriter> {
    if (!Number.isSafeInteger(nbytes) || nbytes < 0) throw invalidParameter('nbytes', 'a non-negative integer', nbytes);
    const { id, blob: loc } = await this.call({ t: 'create', size: nbytes });
    let buffer: Uint8Array;
    try {
      await ensureMapped(this.storeId, this.socketPath, this.token, [loc.seg]);
      const rw = writableMapping(this.mapping(loc.seg));
      // Fault the block into this process before the producer writes: one
      // syscall, off the main thread, instead of a fault per page (2x faster
      // for a cold 256 MiB fill here). Small blocks are not worth it.
      if (loc.size >= POPULATE_MIN) await populateWritable(this.mapping(loc.seg), loc.off, loc.size);
      buffer = new Uint8Array(rw, loc.off, loc.size);
    } catch (e) {
      await this.call({ t: 'abort', id }).catch(() => {});
      throw e;
    }
    let done = false;
    const check = () => {
      if (done) throw new TrellisError('ERR_ALREADY_SEALED', `blob ${id} was already sealed or aborted`);
    };
    return {
      id,
      buffer,
      // A seal refused before anything changed (e.g. the name is taken) leaves
      // the blob unsealed: the writer may fix it and seal again, or abort.
      seal: async (opts: SealOptions = {}) => {
        check();
        const r = await this.call({ t: 'seal', id, ...sealFields(opts) });
        done = true;
        return r.id;
      },
      abort: async () => {
        check();
        await this.call({ t: 'abort', id });
        done = true;
      },
    };
  }

  /** Allocates a tensor to be filled in place; `seal` turns it into a Tensor object. */
  async createTensor<D extends DType>(dtype: D, shape: number[]): Promise<TensorWriter<ArrayOf<D>>> {
    if (!isDType(dtype)) throw invalidParameter('dtype', `one of ${Object.keys(DTYPES).join(', ')}`, dtype);
    if (!Array.isArray(shape)) throw invalidParameter('shape', 'an array of dimensions', shape);
    for (const d of shape)
      if (!Number.isSafeInteger(d) || d < 0) throw invalidParameter('shape[]', 'a non-negative integer', d);
    const ctor = DTYPES[dtype];
    const n = elementCount(shape);
    const w = await this.createBlob(n * ctor.BYTES_PER_ELEMENT);
    const data = new (ctor as unknown as new (b: ArrayBufferLike, o: number, n: number) => TypedArray)(
      w.buffer.buffer,
      w.buffer.byteOffset,
      n,
    ) as TypedArray;
    let done = false;
    return {
      dtype,
      shape: shape.slice(),
      data: data as ArrayOf<D>,
      seal: async (opts: SealOptions = {}) => {
        if (done) throw new TrellisError('ERR_ALREADY_SEALED', `tensor ${w.id} was already sealed or aborted`);
        const r = await this.call({
          t: 'seal',
          id: w.id,
          object: { typename: TENSOR_TYPENAME, meta: { dtype, shape: shape.slice() }, members: [] },
          ...sealFields(opts),
        });
        done = true;
        return r.id;
      },
      abort: async () => {
        if (done) throw new TrellisError('ERR_ALREADY_SEALED', `tensor ${w.id} was already sealed or aborted`);
        await w.abort();
        done = true;
      },
    };
  }

  /**
   * Ends a tag scope of this client (what comes before a tag's last '#'):
   * deletes this client's objects tagged in it, and RPC reads waiting for
   * its tags, now or later, fail with ERR_COLLECTIVE_ABORTED. A producer
   * that gives up calls it so its readers learn at once.
   */
  async endScope(scope: string): Promise<void> {
    checkScope(scope);
    await this.call({ t: 'endScope', scope });
  }

  /**
   * Claims a tag scope for this client before it tags anything in it: if the
   * client closes or dies first, the scope is over all the same, and RPC
   * reads waiting for its tags fail with ERR_COLLECTIVE_ABORTED at once.
   * ERR_NOT_OWNER when another client owns it.
   */
  async claimScope(scope: string): Promise<void> {
    checkScope(scope);
    await this.call({ t: 'claimScope', scope });
  }

  // ---- get --------------------------------------------------------------

  /** Many objects in one round trip, as views over shared memory. */
  async getMany(ids: string[]): Promise<StoreValue[]> {
    if (!Array.isArray(ids)) throw invalidParameter('ids', 'an array of object ids', ids);
    for (const id of ids) if (!isObjectId(id)) throw invalidParameter('id', 'an object id', id);
    this.checkOpen();
    const need = new Set<string>();
    const pinned: string[] = [];
    for (const id of ids) {
      if (this.held.has(id) || this.fetching.has(id) || need.has(id)) continue;
      const p = this.fastPin(id);
      if (p) {
        this.held.set(id, { record: p.record, count: 0, fast: p });
        pinned.push(id);
      } else need.add(id);
    }
    if (need.size > 0) {
      const list = [...need];
      const req = this.fetch(list);
      list.forEach((id, i) => {
        this.fetching.set(
          id,
          req.then((recs) => recs[i]),
        );
      });
      req
        .catch(() => {})
        .finally(() => {
          for (const id of list) this.fetching.delete(id);
        });
    }
    // Fast pins this call took and has not handed out yet: on any failure they go again.
    const dropPinned = () => {
      for (const id of pinned) {
        const h = this.held.get(id);
        if (h && h.count === 0) this.dropHeld(id, h);
      }
    };
    let records: ObjectRecord[];
    try {
      records = await Promise.all(ids.map((id) => this.held.get(id)?.record ?? this.fetching.get(id)!));
    } catch (e) {
      dropPinned();
      throw e;
    }
    let values: StoreValue[];
    try {
      values = records.map((rec) => this.decode(rec));
    } catch (e) {
      // Nothing was handed out, so nothing may stay pinned for this call.
      dropPinned();
      const fresh = [...need].filter((id) => !this.held.has(id));
      if (fresh.length > 0) await this.call({ t: 'release', ids: fresh }).catch(() => {});
      throw e;
    }
    for (const rec of records) {
      const h = this.held.get(rec.id);
      if (h) h.count++;
      else this.held.set(rec.id, { record: rec, count: 1, fast: null });
    }
    return values;
  }

  /**
   * One object. A small sealed Blob or Tensor the store published comes
   * through the fast path (no request: a directory read and a pin in shared
   * memory); anything else takes one round trip, as getMany.
   */
  override async get(id: string): Promise<StoreValue> {
    this.checkOpen();
    // A get of what this client just put by ring, not yet taken in: one drain
    // request and then the fast path, lighter than a get's round trip.
    if (this.fast !== null && this.ring?.undrained(id) && !this.held.has(id) && !this.fetching.has(id)) {
      await this.ring.flush();
      this.checkOpen();
    }
    const h = this.held.get(id);
    if (h) {
      const v = this.decode(h.record);
      h.count++;
      return v;
    }
    if (!this.fetching.has(id)) {
      const p = this.fastPin(id);
      if (p) {
        const held: Held = { record: p.record, count: 0, fast: p };
        this.held.set(id, held);
        try {
          const v = this.decode(p.record);
          held.count = 1;
          return v;
        } catch (e) {
          this.dropHeld(id, held);
          throw e;
        }
      }
    }
    return (await this.getMany([id]))[0];
  }

  /** A fast-path pin of `id` whose segment is mapped here, or undefined. */
  private fastPin(id: string): FastPin | undefined {
    const f = this.fast;
    if (f === null) return undefined;
    const p = f.pin(id);
    if (p === undefined) return undefined;
    const loc = p.record.blob ?? p.record.members[0]?.blob;
    if (loc && mappingOf(this.storeId, loc.seg)) {
      f.counted();
      return p;
    }
    // Not mapped yet: the socket path maps it.
    this.unpinFast(p);
    return undefined;
  }

  private unpinFast(p: FastPin): void {
    // The store waits for this pin before it frees a deleted object: say it is gone.
    if (this.fast?.unpin(p)) this.channel.request({ t: 'unpinned' }, undefined, false).catch(() => {});
  }

  /** Forgets a held object whose count fell to nothing, giving back its pin or reference. */
  private dropHeld(id: string, h: Held): void {
    this.held.delete(id);
    if (h.fast) this.unpinFast(h.fast);
    // No answer is awaited: the client already knows the release is valid.
    // Frames leave in call order (and together within a tick), and the store
    // handles them in order, so anything sent after this sees it released.
    else this.channel.request({ t: 'release', ids: [id] }, undefined, false).catch(() => {});
  }

  /**
   * Synchronous get of an object this client already holds (a get not yet
   * released): no round trip, just new views. Returns undefined when the
   * object is not held; use `get` then. Throws ERR_CLOSED after close, like every method.
   */
  getSync(id: string): StoreValue | undefined {
    this.checkOpen();
    const h = this.held.get(id);
    if (!h) return undefined;
    h.count++;
    return this.decode(h.record);
  }

  private async fetch(ids: string[]): Promise<ObjectRecord[]> {
    const recs = (await this.call({ t: 'get', ids })).objects;
    const segs = new Set<number>();
    const walk = (r: ObjectRecord) => {
      if (r.blob) segs.add(r.blob.seg);
      for (const m of r.members) walk(m);
    };
    recs.forEach(walk);
    const unmapped = [...segs].filter((s) => !mappingOf(this.storeId, s));
    if (unmapped.length > 0) {
      try {
        await ensureMapped(this.storeId, this.socketPath, this.token, unmapped);
      } catch (e) {
        await this.call({ t: 'release', ids }).catch(() => {});
        throw e;
      }
    }
    // Inside the fetch, so a get of the same id meanwhile waits for it too.
    if (decodeNeedsArrow(recs)) {
      try {
        await loadArrowCodec();
      } catch (e) {
        await this.call({ t: 'release', ids }).catch(() => {});
        throw e;
      }
    }
    return recs;
  }

  private decode(rec: ObjectRecord): StoreValue {
    return decodeRecord(rec, (b) => this.blobView(b));
  }

  private blobView(rec: ObjectRecord): Uint8Array {
    const loc = rec.blob;
    if (!loc) throw new TrellisError('ERR_PROTOCOL', `blob ${rec.id} came without a location`);
    return new Uint8Array(this.mapping(loc.seg).ro, loc.off, loc.size);
  }

  private mapping(seg: number) {
    const m = mappingOf(this.storeId, seg);
    if (!m) throw new TrellisError('ERR_INTERNAL', `segment ${seg} is not mapped`);
    return m;
  }

  // ---- lifetime -----------------------------------------------------------

  /** Gives back one reference taken by get; on the last one the store may spill or free the object. */
  async release(id: string): Promise<void> {
    this.checkOpen();
    if (this.channel.error) throw this.channel.error;
    const h = this.held.get(id);
    if (!h) throw new TrellisError('ERR_NOT_REFERENCED', `this client holds no reference to ${id}`);
    if (--h.count > 0) return;
    this.dropHeld(id, h);
  }

  /** Number of objects this client holds references to. */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * A fast path still opening is let finish first: its channel presents this
   * connection's session token, which the store no longer knows once the
   * connection is gone (it would log a client with an unknown token).
   */
  protected override settled(): Promise<unknown> {
    return Promise.all([this.fastPath, this.ringOpening]);
  }

  /** The store drops this client's references when the connection goes. */
  protected disconnect(): void {
    this.held.clear();
    this.fast?.close();
    // Its mappings go when the last view over them does, as the segments' do.
    this.fast = null;
    this.ring = null;
    this.channel.close();
    releaseStore(this.storeId);
  }

  /** One request and its checked answer. */
  private async call<B extends RequestBody>(body: B, payload?: Uint8Array): Promise<ReplyOf<B['t']>> {
    this.checkOpen();
    const f = await this.channel.request(body, payload);
    return decodeReply<B['t']>(body.t, f.header);
  }

  protected send(body: RequestBody): Promise<Frame> {
    return this.channel.request(body);
  }
}

export { ARROW_TYPENAME };

function checkScope(scope: unknown): asserts scope is string {
  if (typeof scope !== 'string' || scope.length === 0 || scope.length > 1024) {
    throw invalidParameter('scope', 'a string of 1 to 1024 characters', scope);
  }
}
