/**
 * What `ingest` reads a dataset from: a source knows its rows, dtypes and
 * sample shape from its headers before any data is read, then fills shards
 * one after another, in order, straight into their store memory.
 */
import type { DType } from '../codecs/tensor.js';

export interface IngestSource {
  /** 'idx', 'npy', 'arrow' or 'parquet'. */
  readonly format: string;
  readonly rows: number;
  /** The shape of one sample (features row). */
  readonly sampleShape: number[];
  readonly dtype: DType;
  readonly labelDtype: DType;
  /**
   * Writes the next `rows` rows: their features into `x` and their labels
   * into `y` (both little-endian, as the store keeps them). `onBytes` is told
   * how many bytes of features or labels were written, for progress.
   */
  fill(x: Uint8Array, y: Uint8Array, rows: number, onBytes: (n: number) => void): Promise<void>;
  /** After the last shard: fails if the files hold more than their headers said. */
  finish(): Promise<void>;
  close(): Promise<void>;
}

/** Reverses each `itemsize`-byte element of `bytes` in place (big-endian files to the store's little-endian). */
export function swapBytes(bytes: Uint8Array, itemsize: number): void {
  if (itemsize === 1) return;
  for (let i = 0; i + itemsize <= bytes.length; i += itemsize) {
    for (let a = i, b = i + itemsize - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}
