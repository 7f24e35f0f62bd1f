/**
 * The store's half of the fast path (layout: protocol/fast-directory.ts): a
 * directory of sealed small objects in shared memory that clients read
 * without asking, so a get of a published object takes no round trip.
 *
 * Only objects whose record the layout can carry whole are published: a Blob
 * with no metadata, or a Tensor of at most MAX_DIMS dimensions over one blob.
 * Anything else, or an object whose entry is taken by a live one, is served by
 * the socket as before. Publishing and retracting are plain writes, ordered by
 * Atomics (seq_cst): the serial last on publish, first (an exchange, a full
 * fence) on retract, before the store reads any pin page.
 */
import { native } from '../native.js';
import {
  counterWords,
  DIRECTORY_BYTES,
  DTYPE_CODES,
  E,
  ENTRY_WORDS,
  entryIndex,
  KIND_BLOB,
  KIND_TENSOR,
  MAX_DIMS,
} from '../protocol/fast-directory.js';
import type { BlobLocation } from '../protocol/records.js';

const TENSOR = 'Tensor';
const BLOB = 'Blob';
const DTYPE_INDEX = new Map<string, number>(DTYPE_CODES.map((d, i) => [d, i]));

/** What an entry of the directory describes: an object and the one blob its bytes live in. */
export interface Publishable {
  readonly id: string;
  readonly typename: string;
  readonly meta: Record<string, unknown>;
  readonly blobId: string;
  readonly loc: BlobLocation;
}

export class FastDirectory {
  readonly fd: number;
  private readonly words: Int32Array;
  private nextSerial = 1;
  private published = 0;

  constructor(label: string) {
    this.fd = native.memfdCreate(`${label}:directory`, DIRECTORY_BYTES);
    this.words = new Int32Array(native.map(this.fd, DIRECTORY_BYTES, true));
  }

  get size(): number {
    return DIRECTORY_BYTES;
  }

  /** Entries now published. */
  get count(): number {
    return this.published;
  }

  /** Publishes an object; returns its serial, or 0 when it cannot be published (then the socket serves it). */
  publish(o: Publishable): number {
    const layout = describe(o);
    if (layout === null) return 0;
    const counter = counterOf(o.id);
    const base = entryIndex(counter) * ENTRY_WORDS;
    const w = this.words;
    if (Atomics.load(w, base + E.SERIAL) !== 0) return 0;
    const [hi, lo] = counterWords(counter);
    const [bhi, blo] = counterWords(counterOf(o.blobId));
    w[base + E.COUNTER_HI] = hi;
    w[base + E.COUNTER_LO] = lo;
    w[base + E.KIND] = layout.kind;
    w[base + E.DTYPE] = layout.dtype;
    w[base + E.NDIM] = layout.shape.length;
    w[base + E.SEG] = o.loc.seg;
    w[base + E.OFF] = o.loc.off;
    w[base + E.SIZE] = o.loc.size;
    w[base + E.BLOB_HI] = bhi;
    w[base + E.BLOB_LO] = blo;
    for (let i = 0; i < layout.shape.length; i++) w[base + E.DIMS + i] = layout.shape[i];
    const serial = this.nextSerial;
    // Serials stay positive int32s; one reused after 2^31 publishes could only
    // collide with a pin held across all of them.
    this.nextSerial = serial >= 0x7fff_ffff ? 1 : serial + 1;
    Atomics.store(w, base + E.SERIAL, serial);
    this.published++;
    return serial;
  }

  /**
   * Hides a published object from fast gets. After this returns, a client
   * that pins `serial` sees it gone when it checks again and lets go, so any
   * pin page read from now on shows every pin that still counts.
   */
  retract(id: string, serial: number): void {
    const base = entryIndex(counterOf(id)) * ENTRY_WORDS;
    if (Atomics.compareExchange(this.words, base + E.SERIAL, serial, 0) === serial) this.published--;
  }

  close(): void {
    native.closeFd(this.fd);
  }
}

function counterOf(id: string): number {
  return Number.parseInt(id.slice(5), 16);
}

function describe(o: Publishable): { kind: number; dtype: number; shape: number[] } | null {
  if (o.loc.off > 0x7fff_ffff || o.loc.size > 0x7fff_ffff) return null;
  if (o.typename === BLOB) {
    for (const _ in o.meta) return null;
    return { kind: KIND_BLOB, dtype: 0, shape: [] };
  }
  if (o.typename !== TENSOR) return null;
  const { dtype, shape, ...rest } = o.meta as { dtype?: unknown; shape?: unknown };
  for (const _ in rest) return null;
  const code = typeof dtype === 'string' ? DTYPE_INDEX.get(dtype) : undefined;
  if (code === undefined || !Array.isArray(shape) || shape.length > MAX_DIMS) return null;
  for (const d of shape) if (!Number.isInteger(d) || d < 0 || d > 0x7fff_ffff) return null;
  return { kind: KIND_TENSOR, dtype: code, shape: shape as number[] };
}
