/**
 * Arrow columns as tensors, without a copy. A tensor here is a TypedArray view
 * over the column's own values buffer — for a table that came from the store,
 * shared memory — with a shape:
 *
 * - a primitive column (Int8..Int64, Uint8..Uint64, Float16/32/64) of n rows
 *   → Tensor [n] over its values;
 * - a FixedSizeList<primitive> column with list size k → Tensor [n, k] over
 *   the child's values; FixedSizeList nests, so FixedSizeList<FixedSizeList<
 *   float32, 28>, 28> → Tensor [n, 28, 28].
 *
 * Not zero-copy, so refused with ERR_UNSUPPORTED: Bool (bit-packed), variable
 * length types (Utf8, List, ...), Dictionary, Struct and the rest; a column in
 * more than one chunk (take the record batches one at a time: `table.batches`).
 *
 * Nulls. A tensor has no nulls, so a column holding any (at the row level or
 * inside its lists) is refused with ERR_UNSUPPORTED, unless the caller passes
 * `{ allowNulls: true }`: the tensor then covers every row, a null row's slots
 * hold whatever bytes the buffer has (usually zeros), and `arrowValidity`
 * gives the row validity bitmap (bit offset + i of the bitmap, LSB first, is
 * row i) as a view too. Null elements inside lists are refused either way.
 *
 * @example
 *   const table = (await client.get(id)) as arrow.Table;
 *   const x = arrowColumnTensor(table, 'features'); // Tensor [rows, 784] over the blob
 *   const y = arrowColumnTensor(table, 'label');    // Tensor [rows]
 */
import * as arrow from 'apache-arrow';
import type { DType, Tensor, TypedArray } from '../codecs/tensor.js';
import { invalidParameter, TrellisError } from '../errors.js';

const { Type } = arrow;

/** Schema metadata key under which a shard writer records the sample shape (a JSON array). */
export const SAMPLE_SHAPE_KEY = 'trellis.sampleShape';

export interface ArrowTensorOptions {
  /** Give a tensor even when the column has null rows (their slots are unspecified); default false. */
  allowNulls?: boolean;
}

/** Row validity of a column, as a view over its bitmap. */
export interface Validity {
  /** The column's validity bitmap (LSB first). */
  bitmap: Uint8Array;
  /** Bit of row 0 in `bitmap`. */
  offset: number;
  nullCount: number;
  length: number;
  isValid(row: number): boolean;
}

type Column = arrow.Data | arrow.Vector;

function singleData(col: Column, what: string): arrow.Data {
  if (col instanceof arrow.Data) return col;
  if (col instanceof arrow.Vector) {
    if (col.data.length === 1) return col.data[0];
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${what} is in ${col.data.length} chunks; a tensor needs one buffer: take the record batches one at a time (table.batches)`,
    );
  }
  throw invalidParameter('column', 'an arrow.Vector or arrow.Data', col);
}

/** The tensor dtype of a primitive Arrow type, or null when it has none. */
export function dtypeOfArrow(type: arrow.DataType): DType | null {
  switch (type.typeId) {
    case Type.Int: {
      const t = type as arrow.Int;
      return `${t.isSigned ? 'int' : 'uint'}${t.bitWidth}` as DType;
    }
    case Type.Float:
      switch ((type as arrow.Float).precision) {
        case arrow.Precision.HALF:
          return 'float16';
        case arrow.Precision.SINGLE:
          return 'float32';
        default:
          return 'float64';
      }
    default:
      return null;
  }
}

/** The column as a tensor over its buffer; see the module comment for what is accepted. */
export function arrowTensor(column: Column, opts: ArrowTensorOptions = {}, what = 'the column'): Tensor {
  const data = singleData(column, what);
  if (data.nullCount > 0 && !opts.allowNulls) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${what} has ${data.nullCount} null rows; a tensor cannot hold nulls (pass allowNulls and read arrowValidity)`,
    );
  }
  const rows = data.length;
  const shape = [rows];
  let node = data;
  let elems = rows;
  while (node.type.typeId === Type.FixedSizeList) {
    const size = (node.type as arrow.FixedSizeList).listSize;
    const child = node.children[0];
    if (!child) throw new TrellisError('ERR_BAD_REQUEST', `${what} is a FixedSizeList without a child array`);
    elems *= size;
    shape.push(size);
    if (child.nullCount > 0) {
      throw new TrellisError(
        'ERR_UNSUPPORTED',
        `${what} has ${child.nullCount} null elements inside its lists; a tensor cannot hold nulls`,
      );
    }
    node = child;
  }
  const dtype = dtypeOfArrow(node.type);
  if (dtype === null) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${what} has Arrow type ${String(data.type)}; only integer and float columns and FixedSizeLists of them map to tensors without a copy`,
    );
  }
  const values = node.values as TypedArray | undefined;
  if (elems === 0) {
    const ctor = (values?.constructor ?? Float32Array) as new (n: number) => TypedArray;
    return { dtype, shape, data: values ? values.subarray(0, 0) : new ctor(0) };
  }
  // arrow-js views of non-bitmap buffers already start at the node's first element.
  if (!values || values.length < elems) {
    throw new TrellisError(
      'ERR_SIZE_MISMATCH',
      `${what}: ${values?.length ?? 0} values for shape [${shape.join(', ')}]`,
    );
  }
  return { dtype, shape, data: values.length === elems ? values : values.subarray(0, elems) };
}

/** The row validity of a column as a view over its bitmap, or null when it has no nulls. */
export function arrowValidity(column: Column, what = 'the column'): Validity | null {
  const data = singleData(column, what);
  const bitmap = data.nullBitmap as Uint8Array | undefined;
  if (data.nullCount <= 0 || !bitmap) return null;
  const offset = data.offset;
  return {
    bitmap,
    offset,
    nullCount: data.nullCount,
    length: data.length,
    isValid: (row) => ((bitmap[(offset + row) >> 3] >> ((offset + row) & 7)) & 1) === 1,
  };
}

function columnOf(source: arrow.Table | arrow.RecordBatch, name: string): arrow.Vector {
  if (!(source instanceof arrow.Table || source instanceof arrow.RecordBatch)) {
    throw invalidParameter('source', 'an arrow.Table or arrow.RecordBatch', source);
  }
  const col = source.getChild(name);
  if (!col) {
    const names = source.schema.fields.map((f) => JSON.stringify(f.name)).join(', ');
    throw new TrellisError('ERR_BAD_REQUEST', `no column named ${JSON.stringify(name)}; the columns are ${names}`);
  }
  return col;
}

/** A named column of a table (of one record batch) or of a record batch, as a tensor. */
export function arrowColumnTensor(
  source: arrow.Table | arrow.RecordBatch,
  name: string,
  opts: ArrowTensorOptions = {},
): Tensor {
  return arrowTensor(columnOf(source, name), opts, `column ${JSON.stringify(name)}`);
}

/** The validity of a named column, or null when it has no nulls. */
export function arrowColumnValidity(source: arrow.Table | arrow.RecordBatch, name: string): Validity | null {
  return arrowValidity(columnOf(source, name), `column ${JSON.stringify(name)}`);
}

/** The sample shape a shard writer recorded in the schema, if any. */
export function recordedSampleShape(schema: arrow.Schema): number[] | undefined {
  const raw = schema.metadata.get(SAMPLE_SHAPE_KEY);
  if (raw === undefined) return undefined;
  let shape: unknown;
  try {
    shape = JSON.parse(raw);
  } catch {
    shape = raw;
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TrellisError('ERR_BAD_REQUEST', `schema metadata ${SAMPLE_SHAPE_KEY} is not a shape: ${raw}`);
  }
  return shape;
}
