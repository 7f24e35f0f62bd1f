/**
 * The local rows of a dataset: the parts of its local shards, end to end, as
 * one row space 0..rows-1. It answers the two questions a loader asks of a
 * batch: is it a view (its rows sit in one part, in order), and if not, how
 * to gather it into a buffer.
 *
 * A gathered batch is laid out as the features rows back to back, then the
 * labels at the next 64-byte boundary (`layout`); a worker gathers a few
 * consecutive batches into one blob, each at a 64-byte boundary
 * (`groupLayout`), so that one round trip serves several batches.
 */
import { DTYPES, type DType, elementCount, type Tensor, type TypedArray } from '../codecs/tensor.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { native, type RowGather } from '../native.js';
import { batchRange } from './sampler.js';
import type { ShardPart } from './shard.js';

export interface BatchLayout {
  rows: number;
  xBytes: number;
  yOffset: number;
  yBytes: number;
  size: number;
}

/** Consecutive batches gathered into one blob: where each starts (64-byte aligned) and its positions in the epoch order. */
export interface GroupLayout {
  offsets: number[];
  ranges: [number, number][];
  size: number;
}

type ArrayCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => TypedArray;

export class LocalRows {
  readonly rows: number;
  readonly xDtype: DType;
  readonly yDtype: DType;
  readonly sampleShape: number[];
  /** Bytes of one row of features / one label. */
  readonly rowBytes: number;
  readonly labelBytes: number;
  /** First row of each part, plus the total at the end. */
  private readonly starts: number[];
  private readonly xBytes: Uint8Array[];
  private readonly yBytes: Uint8Array[];
  private last = 0;
  private readonly gatherer: RowGather;

  constructor(readonly parts: ShardPart[]) {
    if (parts.length === 0) throw new TrellisError('ERR_BAD_REQUEST', 'the dataset has no local rows');
    const first = parts[0];
    this.xDtype = first.x.dtype;
    this.yDtype = first.y.dtype;
    this.sampleShape = first.x.shape.slice(1);
    for (const p of parts) {
      if (
        p.x.dtype !== this.xDtype ||
        p.y.dtype !== this.yDtype ||
        p.x.shape.length !== this.sampleShape.length + 1 ||
        p.x.shape.some((d, i) => i > 0 && d !== this.sampleShape[i - 1])
      ) {
        throw new TrellisError(
          'ERR_SIZE_MISMATCH',
          `shards disagree: features ${p.x.dtype} [${p.x.shape.join(', ')}] / labels ${p.y.dtype} beside ` +
            `${this.xDtype} [rows, ${this.sampleShape.join(', ')}] / ${this.yDtype}`,
        );
      }
    }
    this.rowBytes = elementCount(this.sampleShape) * DTYPES[this.xDtype].BYTES_PER_ELEMENT;
    this.labelBytes = DTYPES[this.yDtype].BYTES_PER_ELEMENT;
    this.starts = [0];
    for (const p of parts) this.starts.push(this.starts[this.starts.length - 1] + p.rows);
    this.rows = this.starts[parts.length];
    const bytes = (t: Tensor) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    this.xBytes = parts.map((p) => bytes(p.x));
    this.yBytes = parts.map((p) => bytes(p.y));
    this.gatherer = new native.RowGather(
      parts.map((p, i) => this.xBytes[i].subarray(0, p.rows * this.rowBytes)),
      parts.map((p, i) => this.yBytes[i].subarray(0, p.rows * this.labelBytes)),
      this.rowBytes,
      this.labelBytes,
    );
  }

  /** The part holding row r. */
  partOf(r: number): number {
    const s = this.starts;
    let p = this.last;
    if (r >= s[p] && r < s[p + 1]) return p;
    let lo = 0;
    let hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (s[mid] <= r) lo = mid;
      else hi = mid - 1;
    }
    p = lo;
    this.last = p;
    return p;
  }

  /** Rows [start, end) in natural order as views of their part, or null when they span two parts. */
  view(start: number, end: number): { x: Tensor; y: Tensor } | null {
    const p = this.partOf(start);
    const base = this.starts[p];
    if (end > this.starts[p + 1]) return null;
    const { x, y } = this.parts[p];
    const per = elementCount(this.sampleShape);
    return {
      x: {
        dtype: x.dtype,
        shape: [end - start, ...this.sampleShape],
        data: x.data.subarray((start - base) * per, (end - base) * per),
      },
      y: { dtype: y.dtype, shape: [end - start], data: y.data.subarray(start - base, end - base) },
    };
  }

  layout(rows: number): BatchLayout {
    const xBytes = rows * this.rowBytes;
    const yOffset = Math.ceil(xBytes / 64) * 64;
    const yBytes = rows * this.labelBytes;
    return { rows, xBytes, yOffset, yBytes, size: yOffset + yBytes };
  }

  /** The layout of batches index..index+count-1 of an epoch, back to back in one blob. */
  groupLayout(batchSize: number, index: number, count: number): GroupLayout {
    const offsets: number[] = [];
    const ranges: [number, number][] = [];
    let size = 0;
    for (let j = 0; j < count; j++) {
      const range = batchRange(this.rows, batchSize, index + j);
      offsets.push(size);
      ranges.push(range);
      size += Math.ceil(this.layout(range[1] - range[0]).size / 64) * 64;
    }
    return { offsets, ranges, size };
  }

  /**
   * Copies the rows at positions [start, end) of `order` (the natural order
   * when null) into `dst`, laid out as `layout(end - start)`: one native call
   * per batch (native/row-gather.cc), which copies runs of consecutive rows in
   * one piece and checks every row index before it writes.
   */
  gather(dst: Uint8Array, order: Uint32Array | null, start: number, end: number): void {
    const limit = order ? order.length : this.rows;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > limit)
      throw invalidParameter('[start, end)', `positions within 0..${limit}`, `[${start}, ${end})`);
    const L = this.layout(end - start);
    if (dst.byteLength < L.size)
      throw new TrellisError('ERR_SIZE_MISMATCH', `batch buffer of ${dst.byteLength} bytes, needs ${L.size}`);
    this.gatherer.gather(order, start, end, dst, L.yOffset);
  }

  /** Tensor views of a gathered batch in `bytes` (laid out as `layout(rows)`). */
  batchViews(bytes: Uint8Array, rows: number): { x: Tensor; y: Tensor } {
    const L = this.layout(rows);
    const xc = DTYPES[this.xDtype] as unknown as ArrayCtor;
    const yc = DTYPES[this.yDtype] as unknown as ArrayCtor;
    const per = elementCount(this.sampleShape);
    return {
      x: {
        dtype: this.xDtype,
        shape: [rows, ...this.sampleShape],
        data: new xc(bytes.buffer, bytes.byteOffset, rows * per),
      },
      y: { dtype: this.yDtype, shape: [rows], data: new yc(bytes.buffer, bytes.byteOffset + L.yOffset, rows) },
    };
  }

  /** The byte ranges of every part's features and labels, for pre-faulting a mapping. */
  byteRanges(): Uint8Array[] {
    return [...this.xBytes, ...this.yBytes];
  }
}
