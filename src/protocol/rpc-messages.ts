/**
 * The RPC message list: what a remote client, or another store, may send a
 * store over TCP, with the decoders of each request and of each reply side by
 * side (RPC_MESSAGES). Requests that mean the same as over IPC are the IPC
 * messages, with their decoders both ways (messages.ts); `hello`, `put` and
 * the `get` answer differ. Requests are encoded by `encodeRpcRequest` from a
 * typed body. The RPC section of docs/PROTOCOL.md describes every message.
 *
 * Raw bytes. Frames are the IPC frames, always with an empty payload. Any
 * frame header may carry `raw`, a list of byte counts: exactly that many
 * bytes follow the frame on the stream, part after part, outside any frame.
 * Blob bytes travel that way, never inside JSON.
 */
import { TrellisError } from '../errors.js';
import { bad, bool, type Header, id, MAX_OBJECT_DEPTH, MAX_TIMEOUT_MS, meta, rid, str, text, uint } from './fields.js';
import { encodeJsonFrame } from './frame.js';
import {
  BLOB_TYPENAME,
  type Body,
  checkReply,
  creating,
  decodeReply,
  decodeRequest,
  helloFields,
  isObjectId,
  type Replies,
  type Request,
} from './messages.js';
import type { ObjectRecord } from './records.js';

export const RPC_VERSION = 1;
/** One raw part is one blob: at most 4 GiB (a Node 20 ArrayBuffer and an arena segment). */
export const MAX_RAW_PART = 4 * 1024 ** 3;
/** Blobs one frame may announce. */
export const MAX_RAW_PARTS = 65_536;
const MAX_TOKEN = 4096;

export { BLOB_TYPENAME };

/** Requests an RPC peer may send that mean what they mean over IPC. */
const SHARED = [
  'make',
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
  'replicate',
] as const;
type Shared = (typeof SHARED)[number];

/** IPC requests that need shared memory or a session, refused over RPC with ERR_UNSUPPORTED. */
const IPC_ONLY = new Set(['create', 'seal', 'abort', 'release', 'unpinned', 'fds', 'endScope', 'claimScope']);

export type RpcRequest =
  | { t: 'hello'; rid: number; version: number; token: string; client?: string }
  | { t: 'put'; rid: number; object: ObjectSpecOf; name?: string; persist: boolean; raw: number[] }
  | { t: 'read'; rid: number; tag: string; offset: number; length?: number; wait: boolean; timeoutMs: number }
  | Extract<Request, { t: Shared | 'get' }>;
type ObjectSpecOf = Extract<Request, { t: 'put' }>['object'];

export type RpcRequestType = RpcRequest['t'];
/** What an RPC sender writes: the request without rid and raw (the channel adds both). */
export type RpcRequestBody = Body<RpcRequest> extends infer B ? (B extends unknown ? Omit<B, 'raw'> : never) : never;

/** The RPC hello answer. */
export interface RpcHelloReply {
  version: number;
  instanceId: number;
  storeId: string;
  name: string;
  maxFrame: number;
}

/** A validated get answer: one tree per id asked for, and the blobs whose bytes follow, in stream order. */
export interface RpcGetAnswer {
  objects: ObjectRecord[];
  /** Blob ids in the order their bytes follow the frame (each once). */
  blobs: string[];
  raw: number[];
}

/** The read answer: the object's id and its blob's whole size; the range asked for follows as one raw part. */
export interface RpcReadReply {
  id: string;
  nbytes: number;
}

export type RpcReplies = Pick<Replies, Shared> & { hello: RpcHelloReply; put: { id: string }; read: RpcReadReply };

function protocolError(message: string): TrellisError {
  return new TrellisError('ERR_PROTOCOL', message);
}

/**
 * The raw byte counts a frame announces, or null when it announces none.
 * A bad `raw` field breaks the stream (nobody can tell where the next frame
 * starts), so it is ERR_PROTOCOL, and the connection is closed.
 */
export function rawSizes(h: Header): number[] | null {
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

function decodeHello(h: Header): RpcRequest {
  const fields = helloFields(h);
  const token = h.token;
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN) {
    throw new TrellisError('ERR_UNAUTHORIZED', 'the hello carries no token');
  }
  return { t: 'hello', ...fields, token };
}

function decodePut(h: Header): RpcRequest {
  const raw = rawSizes(h);
  if (raw === null || raw.length === 0) throw bad('raw', 'at least one blob size', h.raw);
  const r = rid(h);
  const c = creating(h);
  if (c.object.typename === BLOB_TYPENAME && (raw.length !== 1 || c.object.members.length > 0)) {
    throw new TrellisError('ERR_BAD_REQUEST', 'a Blob put carries exactly one blob and no members');
  }
  return { t: 'put', rid: r, ...c, raw };
}

function decodeRead(h: Header): RpcRequest {
  return {
    t: 'read',
    rid: rid(h),
    tag: str(h, 'tag'),
    offset: h.offset === undefined ? 0 : uint(h, 'offset', MAX_RAW_PART),
    length: h.length === undefined ? undefined : uint(h, 'length', MAX_RAW_PART),
    wait: bool(h, 'wait', false),
    timeoutMs: h.timeoutMs === undefined ? 0 : uint(h, 'timeoutMs', MAX_TIMEOUT_MS),
  };
}

/**
 * Checks a read answer against what was asked: one raw part of exactly the
 * length asked for (the rest of the blob when no length was given).
 */
export function decodeReadAnswer(h: Header, offset: number, length: number | undefined): RpcReadReply {
  const r = decodeRpcReply('read', h);
  const raw = rawSizes(h);
  const want = length ?? r.nbytes - offset;
  if (raw === null || raw.length !== 1 || raw[0] !== want || offset + want > r.nbytes) {
    throw protocolError(`a read answer carries one part of ${want} bytes within the blob's ${r.nbytes}`);
  }
  return r;
}

// ---- the message list ------------------------------------------------------------

/** A shared request: the IPC decoder of its own type (the list below admits only shared types here). */
const asOverIpc = (h: Header): RpcRequest => decodeRequest(h) as Extract<Request, { t: Shared | 'get' }>;

type RpcMessages = { [T in RpcRequestType]: { request(h: Header): RpcRequest; reply?(h: Header): unknown } };

/** RPC-only decoders; get's reply needs the ids asked for and is decodeGetAnswer. */
const RPC_MESSAGES: RpcMessages = {
  hello: {
    request: decodeHello,
    reply: (h): RpcHelloReply => ({
      version: uint(h, 'version', 0xffff),
      instanceId: uint(h, 'instanceId', 0xffff),
      storeId: str(h, 'storeId', 256),
      name: text(h, 'name'),
      maxFrame: uint(h, 'maxFrame'),
    }),
  },
  put: { request: decodePut, reply: (h) => ({ id: id(h) }) },
  read: { request: decodeRead, reply: (h): RpcReadReply => ({ id: id(h), nbytes: uint(h, 'nbytes', MAX_RAW_PART) }) },
  get: { request: asOverIpc },
  ...(Object.fromEntries(SHARED.map((t) => [t, { request: asOverIpc }])) as Pick<RpcMessages, Shared>),
};

/** Every RPC message type, for docs/PROTOCOL.md's test. */
export const RPC_MESSAGE_TYPES = Object.keys(RPC_MESSAGES) as RpcRequestType[];

/**
 * Validates an RPC request header: ERR_PROTOCOL for an unknown type,
 * ERR_UNSUPPORTED for IPC-only requests, ERR_BAD_REQUEST for a bad field,
 * ERR_UNAUTHORIZED for a hello without a token.
 */
export function decodeRpcRequest(h: Header): RpcRequest {
  const t = h.t;
  if (typeof t === 'string' && Object.hasOwn(RPC_MESSAGES, t)) return RPC_MESSAGES[t as RpcRequestType].request(h);
  if (IPC_ONLY.has(t as string)) {
    throw new TrellisError('ERR_UNSUPPORTED', `${t} needs shared memory and is available over IPC only`);
  }
  throw protocolError(`unknown request type ${JSON.stringify(String(t).slice(0, 64))}`);
}

/** The checked fields of the `ok` answer to an RPC request of type `t` (get: decodeGetAnswer). */
export function decodeRpcReply<T extends keyof RpcReplies>(t: T, h: Header): RpcReplies[T] {
  const own = RPC_MESSAGES[t].reply;
  if (own) return checkReply(t, h, own as (h: Header) => RpcReplies[T]);
  return decodeReply(t as Shared, h) as RpcReplies[T];
}

/** A request frame from a typed body: rid and, when raw parts follow, their sizes go in front of the body. */
export function encodeRpcRequest(rid: number, body: RpcRequestBody, raw?: readonly Uint8Array[]): Buffer {
  const json = JSON.stringify(body);
  const sizes = raw ? `"raw":[${raw.map((p) => p.byteLength).join(',')}],` : '';
  return encodeJsonFrame(`{"rid":${rid},${sizes}${json.slice(1)}`);
}

// ---- the get answer ----------------------------------------------------------

/** Checks a tree from the wire: shape, ids, sizes, nesting; metadata as requests must have it. */
function decodeTree(v: unknown, where: string, depth: number, sizes: Map<string, number>): ObjectRecord {
  if (depth > MAX_OBJECT_DEPTH) throw protocolError(`${where}: objects nest deeper than ${MAX_OBJECT_DEPTH}`);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw protocolError(`${where}: expected an object`);
  const o = v as Header;
  if (!isObjectId(o.id)) throw protocolError(`${where}.id: expected an object id`);
  if (typeof o.nbytes !== 'number' || !Number.isSafeInteger(o.nbytes) || o.nbytes < 0) {
    throw protocolError(`${where}.nbytes: expected a byte count`);
  }
  if (!Array.isArray(o.members)) throw protocolError(`${where}.members: expected an array`);
  let typename: string;
  let m: Record<string, unknown>;
  try {
    typename = str(o, 'typename', 256);
    m = meta(o, 'meta');
  } catch (e) {
    throw protocolError(`${where}: ${(e as Error).message}`);
  }
  if (typename === BLOB_TYPENAME) {
    if (o.members.length > 0) throw protocolError(`${where}: a Blob has no members`);
    const size = sizes.get(o.id);
    if (size === undefined) throw protocolError(`${where}: blob ${o.id} is not among the blobs that follow`);
    if (size !== o.nbytes) throw protocolError(`${where}: blob ${o.id} has ${o.nbytes} bytes but ${size} follow`);
  }
  const members = o.members.map((x, i) => decodeTree(x, `${where}.members[${i}]`, depth + 1, sizes));
  return { id: o.id, typename, nbytes: o.nbytes, meta: m, members };
}

/** Validates the answer to a get: every blob of every tree is announced once, with its size. */
export function decodeGetAnswer(h: Header, ids: string[]): RpcGetAnswer {
  if (h.t !== 'ok') throw protocolError(`the answer to get is not "ok" but ${String(h.t)}`);
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
