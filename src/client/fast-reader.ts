/**
 * The client's half of the fast path (layout: protocol/fast-directory.ts): a
 * get of a small sealed object the store published reads its record from the
 * shared directory and pins it in this client's own pin page, with no
 * request; release clears the pin. The store frees or spills a published
 * object only after it took it out of the directory and saw no page pin it.
 *
 * The order that makes it safe (both sides use seq_cst Atomics): the client
 * writes its pin (an exchange: a full fence) and only then checks that the
 * entry still holds the serial it read; the store retracts (an exchange) and
 * only then reads the pin pages. Either the store sees the pin, or the client
 * sees the retraction and lets go before using anything.
 */

import { TrellisError } from '../errors.js';
import { native } from '../native.js';
import {
  counterWords,
  DIRECTORY_BYTES,
  DTYPE_CODES,
  E,
  ENTRY_WORDS,
  entryIndex,
  KIND_TENSOR,
  PIN_BYTES,
  PIN_FIRST_SLOT,
  PIN_GETS,
  PIN_HIGH,
  PIN_WORDS,
} from '../protocol/fast-directory.js';
import { BLOB_TYPENAME } from '../protocol/messages.js';
import type { ObjectRecord } from '../protocol/records.js';
import { askFds } from './fd-channel.js';

const TENSOR_TYPENAME = 'Tensor';

/**
 * The directory of each store run, mapped once per process like the segments
 * (segment-cache.ts); it lives while any reader of that store holds it.
 */
const directories = new Map<string, WeakRef<ArrayBuffer>>();

/** A pinned object: its record, and the pin to clear on release. */
export interface FastPin {
  readonly record: ObjectRecord;
  readonly slot: number;
  readonly serial: number;
  readonly index: number;
}

export class FastReader {
  private readonly dir: Int32Array;
  private readonly pins: Int32Array;
  /** Slots let go of, reused first; `high` is one past the highest slot ever used. */
  private readonly free: number[] = [];
  private high = PIN_FIRST_SLOT;
  private gets = 0;
  private closed = false;

  private constructor(
    dir: ArrayBuffer,
    pins: ArrayBuffer,
    /** "o" + the store's instance id in hex: only its own objects are in its directory. */
    private readonly prefix: string,
  ) {
    this.dir = new Int32Array(dir);
    this.pins = new Int32Array(pins);
  }

  /** Asks the store for its directory and a pin page over the fd channel, and maps both. */
  static async open(socketPath: string, token: string, storeId: string, instanceId: number): Promise<FastReader> {
    const { reply, fds } = await askFds(socketPath, { token, segments: [], fastpath: true });
    try {
      const sizes = reply.fastpath;
      if (!sizes || fds.length !== 2) throw new TrellisError('ERR_PROTOCOL', 'the store sent no fast path');
      return FastReader.map(fds[0], fds[1], sizes, storeId, instanceId);
    } finally {
      for (const fd of fds) native.closeFd(fd);
    }
  }

  /**
   * Maps the directory and pin page from their fds (the fd channel's or the
   * hello's), checked against the layout this client knows. The caller keeps
   * and closes the fds: the mappings outlive them.
   */
  static map(
    directoryFd: number,
    pinsFd: number,
    sizes: { directory: number; pins: number },
    storeId: string,
    instanceId: number,
  ): FastReader {
    if (
      sizes.directory !== DIRECTORY_BYTES ||
      sizes.pins !== PIN_BYTES ||
      native.fdSize(directoryFd) !== DIRECTORY_BYTES ||
      native.fdSize(pinsFd) !== PIN_BYTES
    ) {
      throw new TrellisError('ERR_PROTOCOL', 'the fast path has another layout than this client knows');
    }
    const prefix = `o${instanceId.toString(16).padStart(4, '0')}`;
    let dir = directories.get(storeId)?.deref();
    if (!dir) {
      dir = native.map(directoryFd, DIRECTORY_BYTES, false);
      directories.set(storeId, new WeakRef(dir));
    }
    return new FastReader(dir, native.map(pinsFd, PIN_BYTES, true), prefix);
  }

  /** Pins and describes a published object, or undefined when the socket must serve it. */
  pin(id: string): FastPin | undefined {
    if (this.closed || id.length !== 17 || !id.startsWith(this.prefix)) return undefined;
    const counter = Number.parseInt(id.slice(5), 16);
    const index = entryIndex(counter);
    const base = index * ENTRY_WORDS;
    const d = this.dir;
    const serial = Atomics.load(d, base + E.SERIAL);
    if (serial === 0) return undefined;
    const [hi, lo] = counterWords(counter);
    if (d[base + E.COUNTER_HI] !== hi || d[base + E.COUNTER_LO] !== lo) return undefined;
    let slot = this.free.pop();
    if (slot === undefined) {
      if (this.high >= PIN_WORDS) return undefined;
      slot = this.high++;
      Atomics.store(this.pins, PIN_HIGH, this.high);
    }
    Atomics.exchange(this.pins, slot, serial);
    const kind = d[base + E.KIND];
    const dtype = d[base + E.DTYPE];
    const ndim = d[base + E.NDIM];
    const seg = d[base + E.SEG];
    const off = d[base + E.OFF];
    const size = d[base + E.SIZE];
    const bhi = d[base + E.BLOB_HI];
    const blo = d[base + E.BLOB_LO];
    const shape: number[] = [];
    for (let i = 0; i < ndim && i < 4; i++) shape.push(d[base + E.DIMS + i]);
    // Checked after the pin: the same serial means the words above were whole
    // and the store will see this pin before it frees anything.
    if (
      Atomics.load(d, base + E.SERIAL) !== serial ||
      d[base + E.COUNTER_HI] !== hi ||
      d[base + E.COUNTER_LO] !== lo ||
      (kind === KIND_TENSOR && DTYPE_CODES[dtype] === undefined)
    ) {
      this.clear(slot);
      return undefined;
    }
    const blob = { seg, off, size };
    let record: ObjectRecord;
    if (kind === KIND_TENSOR) {
      const blobId = this.prefix + (bhi * 0x1_0000_0000 + (blo >>> 0)).toString(16).padStart(12, '0');
      record = {
        id,
        typename: TENSOR_TYPENAME,
        nbytes: size,
        meta: { dtype: DTYPE_CODES[dtype], shape },
        members: [{ id: blobId, typename: BLOB_TYPENAME, nbytes: size, meta: {}, members: [], blob }],
      };
    } else {
      record = { id, typename: BLOB_TYPENAME, nbytes: size, meta: {}, members: [], blob };
    }
    return { record, slot, serial, index };
  }

  /** Counts a fast get handed out, in the page, where the store reads its figures. */
  counted(): void {
    this.pins[PIN_GETS] = ++this.gets;
  }

  /**
   * Lets go of a pin. Returns true when the store took the object out of the
   * directory meanwhile (it waits for this pin to free it: tell it).
   */
  unpin(p: FastPin): boolean {
    if (this.closed) return false;
    this.clear(p.slot);
    return Atomics.load(this.dir, p.index * ENTRY_WORDS + E.SERIAL) !== p.serial;
  }

  /** The page is the store's to drop once the connection goes; write nothing more to it. */
  close(): void {
    this.closed = true;
  }

  private clear(slot: number): void {
    Atomics.store(this.pins, slot, 0);
    this.free.push(slot);
  }
}
