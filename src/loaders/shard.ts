/**
 * The shard format. A dataset is a global object (client.createDataset) whose
 * members are shards, each one of:
 *
 * - a tensor pair: an object of typename `Shard` with meta `{ rows }` and two
 *   members, features — a Tensor [rows, ...sampleShape] — and labels — a
 *   Tensor [rows];
 * - an Arrow table (typename `ArrowTable`) with a features column — a
 *   FixedSizeList of numbers, or a number column — and a label column (names
 *   chosen by the reader, 'features' and 'label' by default). Each record
 *   batch becomes one part; the schema may record the sample shape under
 *   `trellis.sampleShape`, e.g. [28, 28] for a 784-wide list.
 *
 * A decoded shard is a list of parts, each a pair of tensor views over the
 * shard's own memory: nothing is copied.
 */
import * as arrow from 'apache-arrow';
import type { StoredObject, StoreValue } from '../client/client.js';
import { elementCount, isTensorLike, type Tensor } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import { arrowColumnTensor, recordedSampleShape } from './arrow-adapter.js';

export const SHARD_TYPENAME = 'Shard';

/** One run of rows whose features and labels each sit in one buffer. */
export interface ShardPart {
  /** [rows, ...sampleShape] */
  x: Tensor;
  /** [rows] */
  y: Tensor;
  rows: number;
}

export interface ShardColumns {
  /** Arrow shards: the features column (default 'features'). */
  featureColumn?: string;
  /** Arrow shards: the label column (default 'label'). */
  labelColumn?: string;
}

/** The parts of a decoded shard (a `Shard` tensor pair or an Arrow table); `id` names it in errors. */
export function shardParts(value: StoreValue, id: string, cols: ShardColumns = {}): ShardPart[] {
  if (value instanceof arrow.Table) return arrowParts(value, id, cols);
  const obj = value as StoredObject;
  if (obj && typeof obj === 'object' && 'typename' in obj && obj.typename === SHARD_TYPENAME)
    return [pairPart(obj, id)];
  const kind =
    obj && typeof obj === 'object' && 'typename' in obj ? obj.typename : isTensorLike(value) ? 'Tensor' : 'Blob';
  throw new TrellisError(
    'ERR_BAD_REQUEST',
    `shard ${id} is a ${kind}; a dataset shard is a ${SHARD_TYPENAME} (features and labels tensors) or an Arrow table`,
  );
}

function pairPart(obj: StoredObject, id: string): ShardPart {
  const [x, y] = obj.members;
  if (obj.members.length !== 2 || !isTensorLike(x) || !isTensorLike(y)) {
    throw new TrellisError('ERR_BAD_REQUEST', `shard ${id} must have two Tensor members, features and labels`);
  }
  const rows = Number(obj.meta.rows ?? x.shape[0]);
  checkPart(x, y, rows, id);
  return { x, y, rows };
}

function arrowParts(table: arrow.Table, id: string, cols: ShardColumns): ShardPart[] {
  const featureColumn = cols.featureColumn ?? 'features';
  const labelColumn = cols.labelColumn ?? 'label';
  const sampleShape = recordedSampleShape(table.schema);
  const parts: ShardPart[] = [];
  for (const batch of table.batches) {
    if (batch.numRows === 0) continue;
    const where = (e: unknown) =>
      e instanceof TrellisError ? new TrellisError(e.code, `shard ${id}: ${e.message}`, { cause: e }) : e;
    let x: Tensor;
    let y: Tensor;
    try {
      x = arrowColumnTensor(batch, featureColumn);
      y = arrowColumnTensor(batch, labelColumn);
    } catch (e) {
      throw where(e);
    }
    if (sampleShape) {
      const per = elementCount(x.shape.slice(1));
      if (elementCount(sampleShape) !== per) {
        throw new TrellisError(
          'ERR_SIZE_MISMATCH',
          `shard ${id}: sample shape [${sampleShape.join(', ')}] does not hold the ${per} values of a row`,
        );
      }
      x = { ...x, shape: [batch.numRows, ...sampleShape] };
    }
    checkPart(x, y, batch.numRows, id);
    parts.push({ x, y, rows: batch.numRows });
  }
  return parts;
}

function checkPart(x: Tensor, y: Tensor, rows: number, id: string): void {
  if (!Number.isSafeInteger(rows) || rows < 0) throw new TrellisError('ERR_BAD_REQUEST', `shard ${id}: bad row count`);
  if (x.shape.length < 1 || x.shape[0] !== rows) {
    throw new TrellisError(
      'ERR_SIZE_MISMATCH',
      `shard ${id}: features of shape [${x.shape.join(', ')}] for ${rows} rows`,
    );
  }
  if (y.shape.length !== 1 || y.shape[0] !== rows) {
    throw new TrellisError(
      'ERR_SIZE_MISMATCH',
      `shard ${id}: labels of shape [${y.shape.join(', ')}] for ${rows} rows`,
    );
  }
}
