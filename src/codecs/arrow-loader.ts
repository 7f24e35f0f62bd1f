/**
 * The Arrow codec (arrow.ts), loaded on first use: apache-arrow is most of
 * what importing the client costs (tens of ms), and a reader that never
 * meets a table never needs it. It is the ESM build users import themselves,
 * so `instanceof arrow.Table` holds both ways; Node 20 loads ESM only
 * asynchronously, so the async doors load it (put of a value that is not a
 * tensor, get of a tree that holds a table) and the sync code behind them
 * finds it loaded.
 */
import type { ObjectRecord } from '../protocol/records.js';
import { ARROW_TYPENAME } from './codec.js';
import { isTensorLike, isTypedArray } from './tensor.js';

type ArrowCodec = typeof import('./arrow.js');

let codec: ArrowCodec | null = null;
let loading: Promise<ArrowCodec> | null = null;

/** The codec, or null while it has not been loaded. */
export function arrowCodec(): ArrowCodec | null {
  return codec;
}

/** Loads the codec (once); resolves when `arrowCodec()` returns it. */
export function loadArrowCodec(): Promise<ArrowCodec> {
  loading ??= import('./arrow.js').then((m) => {
    codec = m;
    return m;
  });
  return loading;
}

/** Whether encoding `value` may need the codec and it is not loaded yet (a value that is no tensor may be a table). */
export function encodeNeedsArrow(value: unknown): boolean {
  return codec === null && !isTypedArray(value) && !isTensorLike(value);
}

/** Whether decoding `recs` needs the codec and it is not loaded yet. */
export function decodeNeedsArrow(recs: ObjectRecord[]): boolean {
  if (codec !== null) return false;
  const holds = (r: ObjectRecord): boolean => r.typename === ARROW_TYPENAME || r.members.some(holds);
  return recs.some(holds);
}
