/**
 * Arrow tables (placeholder until the codec lands): see docs/ARCHITECTURE.md.
 */
import * as arrow from 'apache-arrow';
import { TrellisError } from '../errors.js';
import type { ObjectRecord } from '../protocol/messages.js';
import type { BlobResolver, Codec, EncodedValue } from './codec.js';

export const ARROW_TYPENAME = 'ArrowTable';

export function isArrowTable(v: unknown): v is arrow.Table {
  return v instanceof arrow.Table;
}

export function encodeArrowTable(_t: arrow.Table): EncodedValue {
  throw new TrellisError('ERR_UNSUPPORTED', 'Arrow tables are not supported yet');
}

export function arrowTableFromRecord(_rec: ObjectRecord, _resolve: BlobResolver): arrow.Table {
  throw new TrellisError('ERR_UNSUPPORTED', 'Arrow tables are not supported yet');
}

export const arrowCodec: Codec<arrow.Table> = { typename: ARROW_TYPENAME, decode: arrowTableFromRecord };
