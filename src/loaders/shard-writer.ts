/**
 * Writing datasets in the shard format (see shard.ts): from arrays split into
 * N shards, or shard by shard straight into the arena for data that should
 * not exist twice in memory (`createShard`).
 *
 * @example
 *   const { id, shards } = await writeDataset(client, 'fmnist/train', {
 *     features: { dtype: 'uint8', shape: [60000, 28, 28], data: images },
 *     labels: labels,            // Uint8Array [60000]
 *     shards: 4,                 // or shardRows
 *   });
 */
import * as arrow from 'apache-arrow';
import type { TensorWriter, TrellisClient } from '../client/client.js';
import {
  type ArrayOf,
  type DType,
  dtypeOf,
  elementCount,
  isDType,
  isTypedArray,
  type Tensor,
  type TypedArray,
  validateTensor,
} from '../codecs/tensor.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { SAMPLE_SHAPE_KEY } from './arrow-adapter.js';
import { SHARD_TYPENAME } from './shard.js';

export type ShardFormat = 'tensor' | 'arrow';

export interface WriteDatasetInput {
  /** [rows, ...sampleShape] */
  features: Tensor;
  /** [rows]: a Tensor or a bare TypedArray. */
  labels: Tensor | TypedArray;
  /** Rows per shard (the last may be shorter). */
  shardRows?: number;
  /** Number of shards, when shardRows is not given (default 1). */
  shards?: number;
  /**
   * Round shardRows up to a multiple of this (e.g. the batch size), so that
   * sequential batches never span two shards and stay views.
   */
  alignRows?: number;
  /** 'tensor' (Shard objects over two tensors, default) or 'arrow' (Arrow tables). */
  format?: ShardFormat;
  /** Metadata recorded on the dataset object. */
  meta?: Record<string, unknown>;
  /** Keep every shard as this many copies on distinct stores (default 1: no replicas). */
  replicas?: number;
}

export interface WrittenDataset {
  id: string;
  shards: string[];
  rows: number;
}

/** Splits features and labels into shards, stores them and creates the dataset `name` over them. */
export async function writeDataset(
  client: TrellisClient,
  name: string | undefined,
  input: WriteDatasetInput,
): Promise<WrittenDataset> {
  const x = input.features;
  validateTensor(x);
  const y: Tensor = isTypedArray(input.labels)
    ? { dtype: dtypeOf(input.labels), shape: [input.labels.length], data: input.labels }
    : input.labels;
  validateTensor(y);
  const rows = x.shape[0];
  if (x.shape.length < 1 || y.shape.length !== 1 || y.shape[0] !== rows) {
    throw new TrellisError(
      'ERR_SIZE_MISMATCH',
      `features [${x.shape.join(', ')}] and labels [${y.shape.join(', ')}] must have the same number of rows`,
    );
  }
  if (rows === 0) throw new TrellisError('ERR_BAD_REQUEST', 'a dataset needs at least one row');
  const format = input.format ?? 'tensor';
  if (format !== 'tensor' && format !== 'arrow') throw invalidParameter('format', "'tensor' or 'arrow'", format);
  let shardRows = input.shardRows;
  if (shardRows === undefined) {
    const n = input.shards ?? 1;
    if (!Number.isSafeInteger(n) || n < 1) throw invalidParameter('shards', 'a positive integer', n);
    shardRows = Math.max(1, Math.ceil(rows / n));
  }
  if (!Number.isSafeInteger(shardRows) || shardRows < 1)
    throw invalidParameter('shardRows', 'a positive integer', shardRows);
  if (input.alignRows !== undefined) {
    if (!Number.isSafeInteger(input.alignRows) || input.alignRows < 1)
      throw invalidParameter('alignRows', 'a positive integer', input.alignRows);
    shardRows = Math.ceil(shardRows / input.alignRows) * input.alignRows;
  }
  const per = elementCount(x.shape.slice(1));
  const ids: string[] = [];
  try {
    for (let start = 0; start < rows; start += shardRows) {
      const end = Math.min(start + shardRows, rows);
      const xs: Tensor = {
        dtype: x.dtype,
        shape: [end - start, ...x.shape.slice(1)],
        data: x.data.subarray(start * per, end * per),
      };
      const ys: Tensor = { dtype: y.dtype, shape: [end - start], data: y.data.subarray(start, end) };
      ids.push(format === 'arrow' ? await writeArrowShard(client, xs, ys) : await writeShard(client, xs, ys));
    }
    const id = await client.createDataset(name, ids, {
      meta: { format, rows, ...input.meta },
      replicas: input.replicas,
    });
    return { id, shards: ids, rows };
  } catch (e) {
    await client.delete(ids).catch(() => {});
    throw e;
  }
}

/** Stores one tensor-pair shard (features [rows, ...], labels [rows]) and returns its id. */
export async function writeShard(client: TrellisClient, features: Tensor, labels: Tensor): Promise<string> {
  const w = await createShard(client, {
    rows: features.shape[0],
    sampleShape: features.shape.slice(1),
    dtype: features.dtype,
    labelDtype: labels.dtype,
  });
  try {
    w.x.data.set(features.data as never);
    w.y.data.set(labels.data as never);
  } catch (e) {
    await w.abort();
    throw e;
  }
  return w.seal();
}

export interface ShardSpec<D extends DType = DType, L extends DType = DType> {
  rows: number;
  sampleShape: number[];
  dtype: D;
  labelDtype: L;
}

/** A shard being written in place: fill `x.data` and `y.data`, then `seal`. */
export interface ShardWriter<D extends DType = DType, L extends DType = DType> {
  readonly x: TensorWriter<ArrayOf<D>>;
  readonly y: TensorWriter<ArrayOf<L>>;
  /** Seals both tensors and records the Shard; returns its id. */
  seal(): Promise<string>;
  abort(): Promise<void>;
}

/** Allocates a tensor-pair shard in the arena, to be filled in place. */
export async function createShard<D extends DType, L extends DType>(
  client: TrellisClient,
  spec: ShardSpec<D, L>,
): Promise<ShardWriter<D, L>> {
  if (!Number.isSafeInteger(spec.rows) || spec.rows < 0)
    throw invalidParameter('rows', 'a non-negative integer', spec.rows);
  if (!isDType(spec.dtype)) throw invalidParameter('dtype', 'a dtype', spec.dtype);
  if (!isDType(spec.labelDtype)) throw invalidParameter('labelDtype', 'a dtype', spec.labelDtype);
  const x = await client.createTensor(spec.dtype, [spec.rows, ...spec.sampleShape]);
  let y: TensorWriter<ArrayOf<L>>;
  try {
    y = await client.createTensor(spec.labelDtype, [spec.rows]);
  } catch (e) {
    await x.abort().catch(() => {});
    throw e;
  }
  return {
    x,
    y,
    seal: async () => {
      const [xid, yid] = await Promise.all([x.seal(), y.seal()]);
      return client.putObject({ typename: SHARD_TYPENAME, meta: { rows: spec.rows }, members: [xid, yid] });
    },
    abort: async () => {
      await Promise.all([x.abort().catch(() => {}), y.abort().catch(() => {})]);
    },
  };
}

/**
 * An Arrow table with a FixedSizeList `features` column (list size = the
 * sample's element count, sample shape in the schema metadata) and a `label`
 * column, built over the arrays without a copy.
 */
export function shardTable(features: Tensor, labels: Tensor): arrow.Table {
  const rows = features.shape[0];
  const sampleShape = features.shape.slice(1);
  const per = elementCount(sampleShape);
  const valueType = arrowTypeOf(features.dtype);
  const child = makeData({ type: valueType, length: rows * per, nullCount: 0, data: features.data as never });
  const list = new arrow.FixedSizeList(per, new arrow.Field('value', valueType, false));
  const x = makeData({ type: list, length: rows, nullCount: 0, child });
  const y = makeData({ type: arrowTypeOf(labels.dtype), length: rows, nullCount: 0, data: labels.data as never });
  const schema = new arrow.Schema(
    [new arrow.Field('features', list, false), new arrow.Field('label', y.type, false)],
    new Map([[SAMPLE_SHAPE_KEY, JSON.stringify(sampleShape)]]),
  );
  const struct = makeData({
    type: new arrow.Struct(schema.fields),
    length: rows,
    nullCount: 0,
    children: [x, y],
  });
  return new arrow.Table(schema, [new arrow.RecordBatch(schema, struct as arrow.Data<arrow.Struct>)]);
}

/** Stores one Arrow-table shard (see shardTable) and returns its id. */
export async function writeArrowShard(client: TrellisClient, features: Tensor, labels: Tensor): Promise<string> {
  return client.put(shardTable(features, labels));
}

/** arrow.makeData with untyped props: the dtype → Arrow type mapping is checked by arrowTypeOf. */
const makeData = arrow.makeData as unknown as (props: Record<string, unknown>) => arrow.Data;

function arrowTypeOf(dtype: DType): arrow.DataType {
  switch (dtype) {
    case 'int8':
      return new arrow.Int8();
    case 'int16':
      return new arrow.Int16();
    case 'int32':
      return new arrow.Int32();
    case 'int64':
      return new arrow.Int64();
    case 'uint8':
      return new arrow.Uint8();
    case 'uint16':
      return new arrow.Uint16();
    case 'uint32':
      return new arrow.Uint32();
    case 'uint64':
      return new arrow.Uint64();
    case 'float16':
      return new arrow.Float16();
    case 'float32':
      return new arrow.Float32();
    case 'float64':
      return new arrow.Float64();
    default:
      throw new TrellisError('ERR_UNSUPPORTED', `dtype ${dtype} has no Arrow column type without a copy`);
  }
}
