/**
 * The RPC message list: what a remote client, or another store, may send a
 * store over TCP, with the validator of each request and of the one answer
 * that carries data (get). Requests that mean the same as over IPC reuse the
 * IPC validators (`decodeRequest`); `hello` and `put` differ. The RPC section
 * of docs/PROTOCOL.md describes every message.
 *
 * Raw bytes. Frames are the IPC frames, always with an empty payload. Any
 * frame header may carry `raw`, a list of byte counts: exactly that many
 * bytes follow the frame on the stream, part after part, outside any frame.
 * Blob bytes travel that way, never inside JSON.
 */
import { TrellisError } from '../errors.js';
import { BLOB_TYPENAME, decodeRequest, isObjectId, type Request } from './messages.js';
import type { ObjectRecord, ObjectSpec } from './records.js';

export const RPC_VERSION = 1;
/** One raw part is one blob: at most 4 GiB (a Node 20 ArrayBuffer and an arena segment). */
export const MAX_RAW_PART = 4 * 1024 ** 3;
/** Blobs one frame may announce. */
export const MAX_RAW_PARTS = 65_536;
/** Largest frame before the handshake: a hello is small, and strangers get no big buffers. */
export const MAX_HELLO_FRAME = 64 * 1024;
/** How deep an object tree in a get answer may nest. */
export const MAX_TREE_DEPTH = 256;
const MAX_TOKEN = 4096;

export { BLOB_TYPENAME };

/** Requests an RPC peer may send that mean what they mean over IPC. */
const SHARED = [
  'make',
  'get',
  'delete',
  'putName',
  'getName',
  'dropName',
  'listNames',
  'list',
  'status',
  'persist',
  'migrate',
  'instances',
  'listGlobal',
  'createDataset',
  'locate',
] as const;
type Shared = (typeof SHARED)[number];

/** IPC requests that need shared memory or a session, refused over RPC with ERR_UNSUPPORTED. */
const IPC_ONLY = new Set(['create', 'seal', 'abort', 'release', 'fds']);

export type RpcRequest =
  | { t: 'hello'; rid: number; version: number; token: string; client?: string }
  | { t: 'put'; rid: number; object: ObjectSpec; name?: string; persist: boolean; raw: number[] }
  | Extract<Request, { t: Shared }>;

/** A validated get answer: one tree per id asked for, and the blobs whose bytes follow, in stream order. */
export interface RpcGetAnswer {
  objects: ObjectRecord[];
  /** Blob ids in the order their bytes follow the frame (each once). */
  blobs: string[];
  raw: number[];
}

function protocolError(message: string): TrellisError {
  return new TrellisError('ERR_PROTOCOL', message);
}

/**
 * The raw byte counts a frame announces, or null when it announces none.
 * A bad `raw` field breaks the stream (nobody can tell where the next frame
 * starts), so it is ERR_PROTOCOL, and the connection is closed.
 */
export function rawSizes(h: Record<string, unknown>): number[] | null {
  const v = h.raw;
  if (v === undefined) return null;
  if (!Array.isArray(v) || v.length > MAX_RAW_PARTS) {
    throw protocolError(`field "raw" must be an array of at most ${MAX_RAW_PARTS} byte counts`);
  }
  for (const n of v) {
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > MAX_RAW_PART) {
      throw protocolError(`field "raw" must hold byte counts in [0, ${MAX_RAW_PART}], got ${JSON.stringify(n)}`);
    }
  }
  return v as number[];
}

function badField(field: string, expected: string, got: unknown): TrellisError {
  const desc = got === undefined ? 'nothing' : Array.isArray(got) ? 'an array' : typeof got;
  return new TrellisError('ERR_BAD_REQUEST', `field "${field}": expected ${expected}, got ${desc}`);
}

function decodeHello(h: Record<string, unknown>): RpcRequest {
  // rid, version and client as the IPC hello has them
  const base = decodeRequest({ ...h, t: 'hello' }) as Extract<Request, { t: 'hello' }>;
  const token = h.token;
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN) {
    throw new TrellisError('ERR_UNAUTHORIZED', 'the hello carries no token');
  }
  return { t: 'hello', rid: base.rid, version: base.version, token, client: base.client };
}

function decodePut(h: Record<string, unknown>): RpcRequest {
  const raw = rawSizes(h);
  if (raw === null || raw.length === 0) throw badField('raw', 'at least one blob size', h.raw);
  // object and name as the IPC put has them
  const base = decodeRequest({ ...h, t: 'put' }) as Extract<Request, { t: 'put' }>;
  if (base.object.typename === BLOB_TYPENAME && (raw.length !== 1 || base.object.members.length > 0)) {
    throw new TrellisError('ERR_BAD_REQUEST', 'a Blob put carries exactly one blob and no members');
  }
  return { t: 'put', rid: base.rid, object: base.object, name: base.name, persist: base.persist, raw };
}

/**
 * Validates an RPC request header: ERR_PROTOCOL for an unknown type,
 * ERR_UNSUPPORTED for IPC-only requests, ERR_BAD_REQUEST for a bad field,
 * ERR_UNAUTHORIZED for a hello without a token.
 */
export function decodeRpcRequest(h: Record<string, unknown>): RpcRequest {
  const t = h.t as string;
  if (t === 'hello') return decodeHello(h);
  if (t === 'put') return decodePut(h);
  if ((SHARED as readonly string[]).includes(t)) return decodeRequest(h) as RpcRequest;
  if (IPC_ONLY.has(t)) {
    throw new TrellisError('ERR_UNSUPPORTED', `${t} needs shared memory and is available over IPC only`);
  }
  throw protocolError(`unknown request type ${JSON.stringify(String(t).slice(0, 64))}`);
}

// ---- the get answer ----------------------------------------------------------

/** Checks a tree from the wire: shape, ids, sizes, nesting; metadata as the IPC validators want it. */
function decodeTree(v: unknown, where: string, depth: number, sizes: Map<string, number>): ObjectRecord {
  if (depth > MAX_TREE_DEPTH) throw protocolError(`${where}: objects nest deeper than ${MAX_TREE_DEPTH}`);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw protocolError(`${where}: expected an object`);
  const o = v as Record<string, unknown>;
  if (!isObjectId(o.id)) throw protocolError(`${where}.id: expected an object id`);
  if (typeof o.nbytes !== 'number' || !Number.isSafeInteger(o.nbytes) || o.nbytes < 0) {
    throw protocolError(`${where}.nbytes: expected a byte count`);
  }
  if (!Array.isArray(o.members)) throw protocolError(`${where}.members: expected an array`);
  let spec: ObjectSpec;
  try {
    spec = (
      decodeRequest({ t: 'make', rid: 0, object: { typename: o.typename, meta: o.meta } }) as { object: ObjectSpec }
    ).object;
  } catch (e) {
    throw protocolError(`${where}: ${(e as Error).message}`);
  }
  if (spec.typename === BLOB_TYPENAME) {
    if (o.members.length > 0) throw protocolError(`${where}: a Blob has no members`);
    const size = sizes.get(o.id);
    if (size === undefined) throw protocolError(`${where}: blob ${o.id} is not among the blobs that follow`);
    if (size !== o.nbytes) throw protocolError(`${where}: blob ${o.id} has ${o.nbytes} bytes but ${size} follow`);
  }
  const members = o.members.map((m, i) => decodeTree(m, `${where}.members[${i}]`, depth + 1, sizes));
  return { id: o.id, typename: spec.typename, nbytes: o.nbytes, meta: spec.meta, members };
}

/** Validates the answer to a get: every blob of every tree is announced once, with its size. */
export function decodeGetAnswer(h: Record<string, unknown>, ids: string[]): RpcGetAnswer {
  const raw = rawSizes(h) ?? [];
  const blobs = h.blobs;
  if (!Array.isArray(blobs) || blobs.length !== raw.length) {
    throw protocolError('a get answer lists one blob id per raw part');
  }
  const sizes = new Map<string, number>();
  blobs.forEach((id, i) => {
    if (!isObjectId(id) || sizes.has(id)) throw protocolError(`blobs[${i}]: expected a distinct object id`);
    sizes.set(id, raw[i]);
  });
  const objects = h.objects;
  if (!Array.isArray(objects) || objects.length !== ids.length) {
    throw protocolError(`a get answer has one object per id asked for (${ids.length})`);
  }
  const trees = objects.map((o, i) => decodeTree(o, `objects[${i}]`, 0, sizes));
  trees.forEach((t, i) => {
    if (t.id !== ids[i]) throw protocolError(`objects[${i}] is ${t.id}, not ${ids[i]}`);
  });
  return { objects: trees, blobs: blobs as string[], raw };
}
