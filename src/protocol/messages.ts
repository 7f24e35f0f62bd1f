/**
 * The IPC message list, with the decoder (validator) of every request beside
 * its type. The store runs every request through `decodeRequest` before it
 * touches state; the client builds requests from these same types.
 * docs/PROTOCOL.md describes each message.
 */
import { TrellisError } from '../errors.js';
import type { ObjectSpec } from './records.js';

export const PROTOCOL_VERSION = 1;

/** The typename of a raw blob: one byte range in the arena. */
export const BLOB_TYPENAME = 'Blob';

export type Request =
  | { t: 'hello'; rid: number; version: number; client?: string }
  | { t: 'create'; rid: number; size: number }
  | { t: 'seal'; rid: number; id: string; object?: ObjectSpec; name?: string; persist: boolean }
  | { t: 'abort'; rid: number; id: string }
  | { t: 'put'; rid: number; object: ObjectSpec; name?: string; persist: boolean }
  | { t: 'make'; rid: number; object: ObjectSpec; name?: string; persist: boolean }
  | { t: 'get'; rid: number; ids: string[] }
  | { t: 'release'; rid: number; ids: string[] }
  | { t: 'delete'; rid: number; ids: string[]; deep: boolean }
  | { t: 'putName'; rid: number; name: string; id: string; overwrite: boolean }
  | { t: 'getName'; rid: number; name: string; wait: boolean; timeoutMs: number }
  | { t: 'dropName'; rid: number; name: string }
  | { t: 'listNames'; rid: number; prefix: string }
  | { t: 'list'; rid: number; typename?: string; limit: number }
  | { t: 'status'; rid: number }
  | { t: 'persist'; rid: number; ids: string[] }
  | { t: 'migrate'; rid: number; id: string }
  | { t: 'instances'; rid: number }
  | { t: 'listGlobal'; rid: number; typename?: string; instanceId?: number; limit: number }
  | { t: 'createDataset'; rid: number; name?: string; members: string[]; meta: Record<string, unknown> }
  | { t: 'locate'; rid: number; id?: string; name?: string }
  | { t: 'fds'; rid: number; token: string; segments: number[] };

export type RequestType = Request['t'];

const MAX_IDS = 100_000;
const MAX_NAME = 1024;
const MAX_META_DEPTH = 32;
export const MAX_TIMEOUT_MS = 24 * 3600 * 1000;

function bad(field: string, expected: string, got: unknown): TrellisError {
  const desc = got === undefined ? 'nothing' : Array.isArray(got) ? 'an array' : `${typeof got}`;
  return new TrellisError('ERR_BAD_REQUEST', `field "${field}": expected ${expected}, got ${desc}`);
}

function rid(h: Record<string, unknown>): number {
  const v = h.rid;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw bad('rid', 'a uint32', v);
  return v;
}

function str(h: Record<string, unknown>, f: string, max = MAX_NAME): string {
  const v = h[f];
  if (typeof v !== 'string' || v.length === 0 || v.length > max)
    throw bad(f, `a non-empty string of at most ${max}`, v);
  return v;
}

function optStr(h: Record<string, unknown>, f: string, max = MAX_NAME): string | undefined {
  return h[f] === undefined ? undefined : str(h, f, max);
}

function uint(h: Record<string, unknown>, f: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = h[f];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw bad(f, `an integer in [0, ${max}]`, v);
  return v;
}

function bool(h: Record<string, unknown>, f: string, dflt: boolean): boolean {
  const v = h[f];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw bad(f, 'a boolean', v);
  return v;
}

const ID_RE = /^o[0-9a-f]{16}$/;
export function isObjectId(v: unknown): v is string {
  return typeof v === 'string' && ID_RE.test(v);
}

function ids(h: Record<string, unknown>, f: string): string[] {
  const v = h[f];
  if (!Array.isArray(v) || v.length > MAX_IDS) throw bad(f, `an array of at most ${MAX_IDS} object ids`, v);
  for (const x of v) if (!isObjectId(x)) throw bad(`${f}[]`, 'an object id', x);
  return v as string[];
}

function id(h: Record<string, unknown>, f = 'id'): string {
  const v = h[f];
  if (!isObjectId(v)) throw bad(f, 'an object id (o + 16 hex digits)', v);
  return v;
}

function plainObject(v: unknown, field: string, depth = 0): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(field, 'an object', v);
  if (depth > MAX_META_DEPTH) throw bad(field, `nesting of at most ${MAX_META_DEPTH}`, v);
  return v as Record<string, unknown>;
}

/**
 * Metadata is echoed back in every get and list; nesting deeper than
 * JSON.stringify's stack allows would make those answers throw, so it is
 * refused here. Stops at the first level past the limit, so a hostile
 * million-deep value costs no more than a shallow one.
 */
function checkDepth(v: unknown, field: string, depth: number): void {
  if (v === null || typeof v !== 'object') return;
  if (depth > MAX_META_DEPTH) throw bad(field, `nesting of at most ${MAX_META_DEPTH}`, v);
  for (const x of Array.isArray(v) ? v : Object.values(v)) checkDepth(x, field, depth + 1);
}

function objectSpec(h: Record<string, unknown>, f: string): ObjectSpec {
  const o = plainObject(h[f], f);
  const typename = str(o, 'typename', 256);
  const meta = o.meta === undefined ? {} : plainObject(o.meta, `${f}.meta`);
  checkDepth(meta, `${f}.meta`, 1);
  const members = o.members === undefined ? [] : ids(o, 'members');
  return { typename, meta, members };
}

type Decoder = (h: Record<string, unknown>) => Request;

const decoders: Record<RequestType, Decoder> = {
  hello: (h) => ({ t: 'hello', rid: rid(h), version: uint(h, 'version', 0xffff), client: optStr(h, 'client', 256) }),
  create: (h) => ({ t: 'create', rid: rid(h), size: uint(h, 'size') }),
  seal: (h) => ({
    t: 'seal',
    rid: rid(h),
    id: id(h),
    object: h.object === undefined ? undefined : objectSpec(h, 'object'),
    name: optStr(h, 'name'),
    persist: bool(h, 'persist', false),
  }),
  abort: (h) => ({ t: 'abort', rid: rid(h), id: id(h) }),
  put: (h) => ({
    t: 'put',
    rid: rid(h),
    object: objectSpec(h, 'object'),
    name: optStr(h, 'name'),
    persist: bool(h, 'persist', false),
  }),
  make: (h) => ({
    t: 'make',
    rid: rid(h),
    object: objectSpec(h, 'object'),
    name: optStr(h, 'name'),
    persist: bool(h, 'persist', false),
  }),
  get: (h) => ({ t: 'get', rid: rid(h), ids: ids(h, 'ids') }),
  release: (h) => ({ t: 'release', rid: rid(h), ids: ids(h, 'ids') }),
  delete: (h) => ({ t: 'delete', rid: rid(h), ids: ids(h, 'ids'), deep: bool(h, 'deep', true) }),
  putName: (h) => ({
    t: 'putName',
    rid: rid(h),
    name: str(h, 'name'),
    id: id(h),
    overwrite: bool(h, 'overwrite', false),
  }),
  getName: (h) => ({
    t: 'getName',
    rid: rid(h),
    name: str(h, 'name'),
    wait: bool(h, 'wait', false),
    timeoutMs: h.timeoutMs === undefined ? 0 : uint(h, 'timeoutMs', MAX_TIMEOUT_MS),
  }),
  dropName: (h) => ({ t: 'dropName', rid: rid(h), name: str(h, 'name') }),
  listNames: (h) => ({
    t: 'listNames',
    rid: rid(h),
    prefix: h.prefix === undefined ? '' : String(strOrEmpty(h, 'prefix')),
  }),
  list: (h) => ({
    t: 'list',
    rid: rid(h),
    typename: optStr(h, 'typename', 256),
    limit: h.limit === undefined ? 10_000 : uint(h, 'limit', MAX_IDS),
  }),
  status: (h) => ({ t: 'status', rid: rid(h) }),
  persist: (h) => ({ t: 'persist', rid: rid(h), ids: ids(h, 'ids') }),
  migrate: (h) => ({ t: 'migrate', rid: rid(h), id: id(h) }),
  instances: (h) => ({ t: 'instances', rid: rid(h) }),
  listGlobal: (h) => ({
    t: 'listGlobal',
    rid: rid(h),
    typename: optStr(h, 'typename', 256),
    instanceId: h.instanceId === undefined ? undefined : uint(h, 'instanceId', 0xffff),
    limit: h.limit === undefined ? 10_000 : uint(h, 'limit', MAX_IDS),
  }),
  createDataset: (h) => {
    const members = ids(h, 'members');
    if (members.length === 0) throw bad('members', 'at least one shard id', members);
    const meta = h.meta === undefined ? {} : plainObject(h.meta, 'meta');
    checkDepth(meta, 'meta', 1);
    return { t: 'createDataset', rid: rid(h), name: optStr(h, 'name'), members, meta };
  },
  locate: (h) => {
    const r = {
      t: 'locate' as const,
      rid: rid(h),
      id: h.id === undefined ? undefined : id(h),
      name: optStr(h, 'name'),
    };
    if ((r.id === undefined) === (r.name === undefined)) throw bad('id/name', 'exactly one of id and name', undefined);
    return r;
  },
  fds: (h) => {
    const segs = h.segments;
    if (!Array.isArray(segs) || segs.length === 0 || segs.length > 64)
      throw bad('segments', '1 to 64 segment ids', segs);
    for (const s of segs)
      if (typeof s !== 'number' || !Number.isInteger(s) || s < 0) throw bad('segments[]', 'a segment id', s);
    return { t: 'fds', rid: rid(h), token: str(h, 'token', 128), segments: segs as number[] };
  },
};

function strOrEmpty(h: Record<string, unknown>, f: string): string {
  const v = h[f];
  if (typeof v !== 'string' || v.length > MAX_NAME) throw bad(f, `a string of at most ${MAX_NAME}`, v);
  return v;
}

/** Validates a decoded frame header; throws ERR_PROTOCOL for unknown types, ERR_BAD_REQUEST for bad fields. */
export function decodeRequest(h: Record<string, unknown>): Request {
  const t = h.t as string;
  const dec = Object.hasOwn(decoders, t) ? decoders[t as RequestType] : undefined;
  if (!dec) throw new TrellisError('ERR_PROTOCOL', `unknown request type ${JSON.stringify(String(t).slice(0, 64))}`);
  return dec(h);
}

/** rid of a header if it has a valid one, so even a rejected request can be answered. */
export function ridOf(h: Record<string, unknown>): number {
  const v = h.rid;
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff ? v : 0;
}
