/**
 * Values ↔ store objects, whichever connection carries them: which codec
 * encodes a value for put, and how a fetched object tree becomes a value
 * again, given where each blob's bytes are (shared memory over IPC, fresh
 * buffers over RPC).
 */

import type * as arrow from 'apache-arrow';
import { invalidParameter, TrellisError } from '../errors.js';
import { BLOB_TYPENAME } from '../protocol/messages.js';
import type { ObjectHeader, ObjectRecord } from '../protocol/records.js';
import { arrowCodec } from './arrow-loader.js';
import { ARROW_TYPENAME, type BlobResolver, type EncodedValue } from './codec.js';
import {
  dtypeOf,
  encodeTensor,
  isTensorLike,
  isTypedArray,
  TENSOR_TYPENAME,
  type Tensor,
  type TypedArray,
  tensorFromRecord,
} from './tensor.js';

/** What `put` takes: a tensor, a bare TypedArray (a 1-d tensor) or an Arrow table. */
export type PutValue = Tensor | TypedArray | arrow.Table;

/** A composite or custom object as `get` returns it: its header and its decoded members. */
export interface StoredObject extends ObjectHeader {
  members: StoreValue[];
}

/** What `get` returns: a Tensor, an Arrow table, a Blob's bytes, or a StoredObject. */
export type StoreValue = Tensor | arrow.Table | Uint8Array | StoredObject;

/**
 * The codec output for a value put: a Tensor, a bare TypedArray (a 1-d
 * tensor) or an Arrow table. A table is recognised once the Arrow codec is
 * loaded (arrow-loader.ts: `encodeNeedsArrow` says when to load it first).
 */
export function encodeValue(value: PutValue): EncodedValue {
  if (isTypedArray(value)) return encodeTensor({ dtype: dtypeOf(value), shape: [value.length], data: value });
  if (isTensorLike(value)) return encodeTensor(value);
  const arrow = arrowCodec();
  if (arrow?.isArrowTable(value)) return arrow.encodeArrowTable(value);
  throw invalidParameter('value', 'a Tensor, TypedArray or arrow.Table', value);
}

/**
 * Rebuilds a value over the bytes `blob` resolves: Blob → bytes, Tensor,
 * Arrow table, else a StoredObject. A tree with a table needs the Arrow codec
 * loaded (`decodeNeedsArrow`).
 */
export function decodeRecord(rec: ObjectRecord, blob: BlobResolver): StoreValue {
  switch (rec.typename) {
    case BLOB_TYPENAME:
      return blob(rec);
    case TENSOR_TYPENAME:
      return tensorFromRecord(rec, blob);
    case ARROW_TYPENAME: {
      const arrow = arrowCodec();
      if (!arrow) throw new TrellisError('ERR_INTERNAL', 'an Arrow table was decoded before its codec was loaded');
      return arrow.arrowTableFromRecord(rec, blob);
    }
    default:
      return {
        id: rec.id,
        typename: rec.typename,
        nbytes: rec.nbytes,
        meta: rec.meta,
        members: rec.members.map((m) => decodeRecord(m, blob)),
      };
  }
}
