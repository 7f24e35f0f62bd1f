/**
 * Checks of single header fields, the building blocks of every decoder in
 * messages.ts and rpc-messages.ts. Each returns the field typed or throws
 * ERR_BAD_REQUEST naming the field; a reply decoder turns that into
 * ERR_PROTOCOL (a store that sends a bad answer broke the protocol).
 */
import { TrellisError } from '../errors.js';

export type Header = Record<string, unknown>;

export const MAX_IDS = 100_000;
export const MAX_NAME = 1024;
export const MAX_META_DEPTH = 32;
/** Most bytes of one object's metadata (as measured by metaBytes). */
export const MAX_META_BYTES = 1024 * 1024;
export const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
/**
 * Deepest object tree: levels of members below an object (a blob is 0). Every
 * reader of a tree (the store's walks, both clients' answer checks, JSON)
 * must be able to follow it, so the store refuses deeper objects at creation.
 */
export const MAX_OBJECT_DEPTH = 256;
/**
 * Most records in one object tree, counting a member once per path to it: a
 * get answers that many records, and a diamond of shared members doubles them
 * per level, so the count is bounded, not only the depth.
 */
export const MAX_TREE_NODES = 100_000;

export function bad(field: string, expected: string, got: unknown): TrellisError {
  const desc = got === undefined ? 'nothing' : Array.isArray(got) ? 'an array' : `${typeof got}`;
  return new TrellisError('ERR_BAD_REQUEST', `field "${field}": expected ${expected}, got ${desc}`);
}

export function rid(h: Header): number {
  const v = h.rid;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw bad('rid', 'a uint32', v);
  return v;
}

/** rid of a header if it has a valid one, so even a rejected request can be answered. */
export function ridOf(h: Header): number {
  const v = h.rid;
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff ? v : 0;
}

export function str(h: Header, f: string, max = MAX_NAME): string {
  const v = h[f];
  if (typeof v !== 'string' || v.length === 0 || v.length > max)
    throw bad(f, `a non-empty string of at most ${max}`, v);
  return v;
}

export function optStr(h: Header, f: string, max = MAX_NAME): string | undefined {
  return h[f] === undefined ? undefined : str(h, f, max);
}

/** A string that may be empty. */
export function text(h: Header, f: string, max = MAX_NAME): string {
  const v = h[f];
  if (typeof v !== 'string' || v.length > max) throw bad(f, `a string of at most ${max}`, v);
  return v;
}

export function uint(h: Header, f: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = h[f];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw bad(f, `an integer in [0, ${max}]`, v);
  return v;
}

/** A signed number (figures such as fragmentation). */
export function num(h: Header, f: string): number {
  const v = h[f];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(f, 'a number', v);
  return v;
}

export function bool(h: Header, f: string, dflt?: boolean): boolean {
  const v = h[f];
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'boolean') throw bad(f, 'a boolean', v);
  return v;
}

/** "o" + 16 lowercase hex digits. A loop, not a regex: every answer's ids pass through here. */
export function isObjectId(v: unknown): v is string {
  if (typeof v !== 'string' || v.length !== 17 || v.charCodeAt(0) !== 0x6f) return false;
  for (let i = 1; i < 17; i++) {
    const c = v.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

export function id(h: Header, f = 'id'): string {
  const v = h[f];
  if (!isObjectId(v)) throw bad(f, 'an object id (o + 16 hex digits)', v);
  return v;
}

export function ids(h: Header, f: string): string[] {
  const v = h[f];
  if (!Array.isArray(v) || v.length > MAX_IDS) throw bad(f, `an array of at most ${MAX_IDS} object ids`, v);
  for (const x of v) if (!isObjectId(x)) throw bad(`${f}[]`, 'an object id', x);
  return v as string[];
}

export function array(h: Header, f: string): unknown[] {
  const v = h[f];
  if (!Array.isArray(v)) throw bad(f, 'an array', v);
  return v;
}

export function plainObject(v: unknown, field: string): Header {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(field, 'an object', v);
  return v as Header;
}

/**
 * Metadata is echoed back in every get and list; nesting deeper than
 * JSON.stringify's stack allows would make those answers throw, so it is
 * refused here. Stops at the first level past the limit, so a hostile
 * million-deep value costs no more than a shallow one. Returns the value's
 * size in bytes, about as JSON writes it (strings and keys by length, 8 per
 * other value), measured in the same walk.
 */
function checkDepth(v: unknown, field: string, depth: number): number {
  if (typeof v === 'string') return v.length + 2;
  if (v === null || typeof v !== 'object') return 8;
  if (depth > MAX_META_DEPTH) throw bad(field, `nesting of at most ${MAX_META_DEPTH}`, v);
  let n = 2;
  if (Array.isArray(v)) for (const x of v) n += 1 + checkDepth(x, field, depth + 1);
  else for (const k in v) n += k.length + 4 + checkDepth((v as Header)[k], field, depth + 1);
  return n;
}

/** The bytes `meta` counts for a metadata object already checked (e.g. one a migration brings). */
export function metaBytes(m: Record<string, unknown>): number {
  return checkDepth(m, 'meta', 1);
}

/**
 * Object metadata as a request carries it, with its size: a JSON object nested
 * at most MAX_META_DEPTH deep and at most MAX_META_BYTES big; absent is {}.
 */
export function sizedMeta(h: Header, f: string, where = f): { meta: Record<string, unknown>; bytes: number } {
  if (h[f] === undefined) return { meta: {}, bytes: 2 };
  const m = plainObject(h[f], where);
  const bytes = checkDepth(m, where, 1);
  if (bytes > MAX_META_BYTES) throw bad(where, `metadata of at most ${MAX_META_BYTES} bytes`, m);
  return { meta: m, bytes };
}

export function meta(h: Header, f: string, where = f): Record<string, unknown> {
  return sizedMeta(h, f, where).meta;
}
