/**
 * How values become store objects and back. A codec turns a value into one
 * blob plus metadata (`encode`) and rebuilds the value over a read-only view
 * of that blob (`decode`), without copying.
 */
import type { ObjectRecord } from '../protocol/records.js';

/** The typename of an Arrow table (here, not in arrow.ts: knowing it must not load apache-arrow). */
export const ARROW_TYPENAME = 'ArrowTable';

export interface EncodedValue {
  typename: string;
  meta: Record<string, unknown>;
  /** Bytes of the blob the value needs. */
  size: number;
  /** Writes the blob's bytes into `dst` (exactly `size` bytes, 64-byte aligned). */
  write(dst: Uint8Array): void;
  /** The blob's bytes when they already sit in one piece, so an inline put needs no staging copy. */
  contiguous?: Uint8Array;
}

/** Resolves a Blob record to a view of its bytes. */
export type BlobResolver = (blob: ObjectRecord) => Uint8Array;
