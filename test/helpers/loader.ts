/**
 * Loader test helpers: a small dataset whose labels are row numbers (so a
 * batch says which rows it holds), a reference gather over the source arrays,
 * and whether a process is still alive.
 */
import { readFileSync } from 'node:fs';
import { type Batch, type Tensor, type TrellisClient, writeDataset } from 'trellis';
import { elementMismatch } from './bytes.js';

export interface TestData {
  rows: number;
  sampleShape: number[];
  /** [rows, ...sampleShape] float32: row r holds r * 1000 + element index. */
  features: Float32Array;
  /** [rows] int32: label r = r. */
  labels: Int32Array;
}

export function testData(rows: number, sampleShape = [2, 3]): TestData {
  const per = sampleShape.reduce((a, b) => a * b, 1);
  const features = new Float32Array(rows * per);
  for (let r = 0; r < rows; r++) for (let e = 0; e < per; e++) features[r * per + e] = r * 1000 + e;
  const labels = Int32Array.from({ length: rows }, (_, r) => r);
  return { rows, sampleShape, features, labels };
}

export async function putTestDataset(
  c: TrellisClient,
  name: string,
  d: TestData,
  opts: { shards?: number; shardRows?: number; alignRows?: number; format?: 'tensor' | 'arrow' } = {},
): Promise<{ id: string; shards: string[] }> {
  return writeDataset(c, name, {
    features: { dtype: 'float32', shape: [d.rows, ...d.sampleShape], data: d.features },
    labels: d.labels,
    ...opts,
  });
}

/** The rows a batch holds (its labels), copied. */
export function rowsOf(b: Batch): number[] {
  return Array.from(b.y.data as Int32Array);
}

/** The features rows `rows` gathered from the source arrays, as the loader should have. */
export function referenceGather(d: TestData, rows: number[]): Float32Array {
  const per = d.sampleShape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(rows.length * per);
  rows.forEach((r, i) => {
    out.set(d.features.subarray(r * per, (r + 1) * per), i * per);
  });
  return out;
}

export interface SeenBatch {
  epoch: number;
  index: number;
  rows: number[];
  source: string;
  lastOfEpoch: boolean;
  /** Null when x equals the reference gather of its rows, else where it first differs. */
  xMismatch: string | null;
  shape: number[];
}

/** Reads a batch while it is valid: which rows, and whether x equals the reference gather of them. */
export function inspect(d: TestData, b: Batch): SeenBatch {
  const rows = rowsOf(b);
  const want = referenceGather(d, rows);
  return {
    epoch: b.epoch,
    index: b.index,
    rows,
    source: b.source,
    lastOfEpoch: b.lastOfEpoch,
    xMismatch: elementMismatch(b.x.data as Float32Array, want),
    shape: (b.x as Tensor).shape,
  };
}

/** Whether a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
