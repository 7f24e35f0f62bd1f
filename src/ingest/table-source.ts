/**
 * Sources made of tables (Arrow IPC, Parquet): record batches or row groups
 * arrive one at a time, as columns; rows are copied from them into the
 * shards, a batch possibly spanning two shards. Features come from one
 * column (numbers, or fixed-size lists of them: a sample shape) or from
 * several number columns of one dtype, side by side ([rows, columns]).
 */
import { DTYPES, type DType, type TypedArray } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import type { IngestSource } from './ingest-source.js';

/** One batch of rows: each features column (rows × per-row elements), and the labels (rows). */
export interface RowBatch {
  rows: number;
  features: TypedArray[];
  labels: TypedArray;
}

export interface TableLayout {
  rows: number;
  sampleShape: number[];
  dtype: DType;
  labelDtype: DType;
}

/** Which columns of a table hold the features and the labels. */
export interface ColumnChoice {
  /** Feature columns; default: `features` if the table has it, else every column but the label. */
  features?: string[];
  /** The label column (default `label`). */
  label?: string;
}

/** The feature and label column names of a table with `names`, checked. */
export function chooseColumns(
  path: string,
  names: string[],
  choice: ColumnChoice,
): { features: string[]; label: string } {
  const label = choice.label ?? 'label';
  const have = new Set(names);
  const missing = (c: string) =>
    new TrellisError(
      'ERR_FILE_FORMAT',
      `${path} has no column ${JSON.stringify(c)}; its columns are ${names.join(', ')}`,
    );
  if (!have.has(label)) throw missing(label);
  const features = choice.features ?? (have.has('features') ? ['features'] : names.filter((n) => n !== label));
  if (features.length === 0) throw new TrellisError('ERR_FILE_FORMAT', `${path} has no feature column beside ${label}`);
  for (const f of features) if (!have.has(f)) throw missing(f);
  return { features, label };
}

export class TableSource implements IngestSource {
  readonly rows: number;
  readonly sampleShape: number[];
  readonly dtype: DType;
  readonly labelDtype: DType;
  private batch: RowBatch | null = null;
  /** Rows of `batch` already copied. */
  private used = 0;
  private readonly per: number;

  constructor(
    readonly format: string,
    private readonly path: string,
    layout: TableLayout,
    private readonly batches: AsyncIterator<RowBatch>,
    private readonly onClose: () => Promise<void>,
  ) {
    this.rows = layout.rows;
    this.sampleShape = layout.sampleShape;
    this.dtype = layout.dtype;
    this.labelDtype = layout.labelDtype;
    this.per = layout.sampleShape.reduce((a, b) => a * b, 1);
  }

  async fill(xBytes: Uint8Array, yBytes: Uint8Array, rows: number, onBytes: (n: number) => void): Promise<void> {
    const X = DTYPES[this.dtype] as unknown as new (b: ArrayBufferLike, o: number, n: number) => TypedArray;
    const Y = DTYPES[this.labelDtype] as unknown as new (b: ArrayBufferLike, o: number, n: number) => TypedArray;
    const x = new X(xBytes.buffer, xBytes.byteOffset, rows * this.per);
    const y = new Y(yBytes.buffer, yBytes.byteOffset, rows);
    let done = 0;
    while (done < rows) {
      if (!this.batch || this.used === this.batch.rows) {
        const r = await this.batches.next();
        if (r.done)
          throw new TrellisError(
            'ERR_FILE_TRUNCATED',
            `${this.path} ended after ${done} of the ${this.rows} rows counted`,
          );
        this.batch = r.value;
        this.used = 0;
        continue;
      }
      const b = this.batch;
      const n = Math.min(rows - done, b.rows - this.used);
      if (b.features.length === 1) {
        const col = b.features[0]!;
        (x as Uint8Array).set(col.subarray(this.used * this.per, (this.used + n) * this.per) as never, done * this.per);
      } else {
        // Several scalar columns: row r is [c0[r], c1[r], ...].
        const k = b.features.length;
        for (let j = 0; j < k; j++) {
          const col = b.features[j]!;
          for (let r = 0; r < n; r++) (x as Uint8Array)[(done + r) * k + j] = col[this.used + r] as never;
        }
      }
      (y as Uint8Array).set(b.labels.subarray(this.used, this.used + n) as never, done);
      this.used += n;
      done += n;
      onBytes(n * (x.BYTES_PER_ELEMENT * this.per + y.BYTES_PER_ELEMENT));
    }
  }

  async finish(): Promise<void> {
    const left = this.batch ? this.batch.rows - this.used : 0;
    const more = left === 0 ? !(await this.batches.next()).done : true;
    if (more) throw new TrellisError('ERR_FILE_FORMAT', `${this.path} holds more rows than the ${this.rows} counted`);
  }

  async close(): Promise<void> {
    await this.onClose();
  }
}
