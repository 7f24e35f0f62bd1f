/**
 * The IPC message list: for every message, its request and reply types, the
 * request's decoder (the store runs every request through it before it
 * touches state) and the reply's decoder (the client runs every answer
 * through it before it uses a field), side by side in MESSAGES. Requests
 * are encoded by `encodeRequest` from a typed body: JSON carries the typed
 * fields as they are, so one typed encoder serves every message. Replies are
 * `{t:"ok", rid, ...fields}` or `{t:"err", rid, code, message}`.
 * docs/PROTOCOL.md describes each message.
 *
 * Reply decoders run once per round trip: they check shapes and the fields a
 * client relies on (ids, sizes, locations), not metadata depth (the store
 * checked that when the object was made).
 */
import { TrellisError } from '../errors.js';
import {
  array,
  bad,
  bool,
  type Header,
  id,
  ids,
  isObjectId,
  MAX_IDS,
  MAX_OBJECT_DEPTH,
  MAX_TIMEOUT_MS,
  meta,
  num,
  optStr,
  plainObject,
  rid,
  sizedMeta,
  str,
  text,
  uint,
} from './fields.js';
import { encodeJsonFrame } from './frame.js';
import type {
  BlobLocation,
  GlobalObjectInfo,
  InstanceInfo,
  Locations,
  ObjectRecord,
  ObjectSpec,
  ObjectSummary,
  RepairStatus,
  ReplicaCopy,
  SegmentInfo,
  StoreStatus,
} from './records.js';

export { isObjectId, ridOf } from './fields.js';

export const PROTOCOL_VERSION = 1;

/** The typename of a raw blob: one byte range in the arena. */
export const BLOB_TYPENAME = 'Blob';

/** Most reads a tagged object may be given before it goes (a group of that many peers). */
export const MAX_TAG_READS = 65_535;

/** `list` and `listGlobal` answer at most this many objects unless asked otherwise. */
/** Objects a list answers when it names no limit (the client's list() follows pages up to it too). */
export const DEFAULT_LIST_LIMIT = 10_000;

/** Most copies an object may ask for (a replication factor counts the primary). */
export const MAX_REPLICAS = 64;

export type Request =
  | { t: 'hello'; rid: number; version: number; client?: string; attach?: boolean }
  | { t: 'create'; rid: number; size: number }
  | {
      t: 'seal';
      rid: number;
      id: string;
      object?: ObjectSpec;
      name?: string;
      persist: boolean;
      /** A store-local tag for the sealed object, owned by this connection (src/store/tags.ts). */
      tag?: string;
      /** With a tag: delete the object after this many complete RPC reads (absent: no limit). */
      reads?: number;
    }
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
  | { t: 'list'; rid: number; typename?: string; limit: number; cursor?: string }
  | { t: 'status'; rid: number }
  | { t: 'persist'; rid: number; ids: string[]; replicas?: number }
  | { t: 'migrate'; rid: number; id: string }
  | { t: 'instances'; rid: number }
  | { t: 'listGlobal'; rid: number; typename?: string; instanceId?: number; limit: number }
  | {
      t: 'createDataset';
      rid: number;
      name?: string;
      members: string[];
      meta: Record<string, unknown>;
      replicas?: number;
    }
  | { t: 'replicate'; rid: number; id: string; from: ReplicaCopy }
  | { t: 'locate'; rid: number; id?: string; name?: string }
  | { t: 'unpinned'; rid: number }
  | { t: 'fds'; rid: number; token: string; segments: number[]; fastpath?: boolean; ring?: boolean }
  /** A new slab and id block for this connection's put ring (the slab before is given back). */
  | { t: 'lease'; rid: number }
  /** The put ring's doorbell (sent without an answer), or, answered, a wait until the store drained the ring. */
  | { t: 'ring'; rid: number }
  | { t: 'endScope'; rid: number; scope: string }
  | { t: 'claimScope'; rid: number; scope: string };

export type RequestType = Request['t'];
export type RequestOf<T extends RequestType> = Extract<Request, { t: T }>;

/** Fields the store fills in with a default when a request leaves them out. */
type Defaulted = 'persist' | 'deep' | 'overwrite' | 'wait' | 'timeoutMs' | 'prefix' | 'limit' | 'meta';

/** What a sender writes: the request without its rid, defaulted fields optional. */
export type Body<R> = R extends unknown
  ? Omit<R, 'rid' | Defaulted> & Partial<Pick<R, Extract<keyof R, Defaulted>>>
  : never;
export type RequestBody<T extends RequestType = RequestType> = Body<RequestOf<T>>;

/** The IPC hello answer. */
export interface HelloReply {
  version: number;
  instanceId: number;
  storeId: string;
  name: string;
  /** Session secret for the fd channel. */
  token: string;
  maxFrame: number;
  inlineLimit: number;
  session: number;
  /** Segments the arena has now (the client maps them ahead). */
  segments: number;
  /**
   * Answer to a hello with `attach`: the fds that came with this answer
   * (SCM_RIGHTS), in this order: the listed segments', then the fast path's
   * directory and pin page. Absent: none came (the fd channel serves them).
   */
  attached?: FdsReply;
}

/** The fds a store sends, described (the fd channel's answer and the attached hello's). */
export interface FdsReply {
  segments: SegmentInfo[];
  /** The byte sizes of the directory and pin page whose fds follow the segments'. */
  fastpath?: { directory: number; pins: number };
  /** The byte size of the put ring whose fd comes last (when asked). */
  ring?: number;
}

/** Most fds one answer carries (native/fd-passing.cc receives at most 64). */
export const MAX_FDS = 64;

/** The fields of each request's `ok` answer. */
export interface Replies {
  hello: HelloReply;
  create: { id: string; blob: BlobLocation };
  seal: { id: string };
  abort: Record<string, never>;
  put: { id: string };
  make: { id: string };
  get: { objects: ObjectRecord[] };
  release: Record<string, never>;
  delete: Record<string, never>;
  putName: Record<string, never>;
  getName: { id: string };
  dropName: { id: string };
  listNames: { names: Record<string, string> };
  /** `next`: the cursor of the following page, absent on the last one. */
  list: { objects: ObjectSummary[]; next?: string };
  status: { status: StoreStatus };
  persist: Record<string, never>;
  migrate: { id: string };
  instances: { instances: InstanceInfo[] };
  listGlobal: { objects: GlobalObjectInfo[] };
  createDataset: { id: string };
  locate: { locations: Locations };
  /** `id`: this store's copy; `added`: it counts among the object's copies (false: enough copies were there). */
  replicate: { id: string; added: boolean };
  unpinned: Record<string, never>;
  /** `fastpath` when asked. */
  fds: FdsReply;
  /**
   * The slab (a block of the arena this connection writes puts into, from its
   * start), the lease's number (records carry it), and the ids leased: `ids`
   * counters from `first` on.
   */
  lease: { slab: BlobLocation; lease: number; first: number; ids: number };
  ring: Record<string, never>;
  endScope: Record<string, never>;
  claimScope: Record<string, never>;
}
export type ReplyOf<T extends RequestType> = Replies[T];

// ---- request decoders: checks of what a client sent ---------------------------

function objectSpec(h: Header, f: string): ObjectSpec {
  const o = plainObject(h[f], f);
  const m = sizedMeta(o, 'meta', `${f}.meta`);
  return {
    typename: str(o, 'typename', 256),
    meta: m.meta,
    members: o.members === undefined ? [] : ids(o, 'members'),
    metaBytes: m.bytes,
  };
}

/** The fields `put`, `make` and `seal` share (the RPC put too). */
export function creating(h: Header): { object: ObjectSpec; name?: string; persist: boolean } {
  return { object: objectSpec(h, 'object'), name: optStr(h, 'name'), persist: bool(h, 'persist', false) };
}

/** The hello fields IPC and RPC share. */
export function helloFields(h: Header): { rid: number; version: number; client?: string } {
  return { rid: rid(h), version: uint(h, 'version', 0xffff), client: optStr(h, 'client', 256) };
}

/** The description of the fds an answer carries: segments, then the fast path's two; MAX_FDS in all. */
function fdsReply(h: Header): FdsReply {
  const segments = records(h, 'segments', (o) => ({ id: uint(o, 'id', 0xffff), size: uint(o, 'size') }));
  const extra = (h.fastpath === undefined ? 0 : 2) + (h.ring === undefined ? 0 : 1);
  if (segments.length + extra > MAX_FDS) throw bad('segments', `at most ${MAX_FDS - extra} segments`, segments.length);
  const out: FdsReply = { segments };
  if (h.fastpath !== undefined) {
    const f = plainObject(h.fastpath, 'fastpath');
    out.fastpath = { directory: uint(f, 'directory'), pins: uint(f, 'pins') };
  }
  if (h.ring !== undefined) out.ring = uint(h, 'ring');
  return out;
}

const listLimit = (h: Header) => (h.limit === undefined ? DEFAULT_LIST_LIMIT : uint(h, 'limit', MAX_IDS));

// ---- reply decoders: checks of what the store answered ------------------------

const empty = (): Record<string, never> => ({});
const idReply = (h: Header) => ({ id: id(h) });

function blobLocation(v: unknown, f: string): BlobLocation {
  const o = plainObject(v, f);
  return { seg: uint(o, 'seg', 0xffff), off: uint(o, 'off'), size: uint(o, 'size') };
}

/** The header every record of an object has; metadata only as an object (the store checked its depth). */
function header(o: Header): { id: string; typename: string; nbytes: number; meta: Record<string, unknown> } {
  return { id: id(o), typename: str(o, 'typename', 256), nbytes: uint(o, 'nbytes'), meta: plainObject(o.meta, 'meta') };
}

/**
 * Checks an object tree of an IPC get answer in place and returns it: a get
 * is the hot path, so the checked tree is the one that arrived, not a copy.
 * Blob records must carry their location.
 */
function objectTree(v: unknown, depth = 0): ObjectRecord {
  if (depth > MAX_OBJECT_DEPTH) throw bad('objects', `trees nested at most ${MAX_OBJECT_DEPTH} deep`, v);
  const o = plainObject(v, 'objects[]');
  id(o);
  str(o, 'typename', 256);
  uint(o, 'nbytes');
  plainObject(o.meta, 'meta');
  for (const m of array(o, 'members')) objectTree(m, depth + 1);
  if (o.typename === BLOB_TYPENAME) blobLocation(o.blob, 'blob');
  return o as unknown as ObjectRecord;
}

function records<T>(h: Header, f: string, one: (o: Header) => T): T[] {
  return array(h, f).map((v) => one(plainObject(v, `${f}[]`)));
}

function summary(o: Header): ObjectSummary {
  return { ...header(o), members: ids(o, 'members'), spilled: bool(o, 'spilled'), references: uint(o, 'references') };
}

function globalObject(o: Header): GlobalObjectInfo {
  return {
    ...header(o),
    members: ids(o, 'members'),
    instanceId: uint(o, 'instanceId', 0xffff),
    global: bool(o, 'global'),
    persistedAt: uint(o, 'persistedAt'),
    alive: bool(o, 'alive'),
  };
}

function endpoint(v: unknown): InstanceInfo['rpc'] {
  if (v === null) return null;
  const o = plainObject(v, 'rpc');
  return { host: str(o, 'host', 256), port: uint(o, 'port', 65535) };
}

function instance(o: Header): InstanceInfo {
  return {
    instanceId: uint(o, 'instanceId', 0xffff),
    name: text(o, 'name'),
    hostname: text(o, 'hostname'),
    pid: uint(o, 'pid'),
    storeId: str(o, 'storeId', 256),
    rpc: endpoint(o.rpc),
    memoryUsed: uint(o, 'memoryUsed'),
    memoryLimit: uint(o, 'memoryLimit'),
    startedAt: uint(o, 'startedAt'),
    updatedAt: uint(o, 'updatedAt'),
  };
}

function locations(h: Header): Locations {
  const o = plainObject(h.locations, 'locations');
  const shards = records(o, 'shards', (s) => ({
    id: id(s),
    typename: str(s, 'typename', 256),
    nbytes: uint(s, 'nbytes'),
    instanceId: num(s, 'instanceId'),
    alive: bool(s, 'alive'),
    replicas: records(s, 'replicas', (r) => ({
      id: id(r),
      instanceId: uint(r, 'instanceId', 0xffff),
      alive: bool(r, 'alive'),
    })),
  }));
  const instances = records(o, 'instances', (i) => ({
    instanceId: uint(i, 'instanceId', 0xffff),
    name: text(i, 'name'),
    hostname: text(i, 'hostname'),
    rpc: endpoint(i.rpc),
    alive: bool(i, 'alive'),
    shards: ids(i, 'shards'),
    bytes: uint(i, 'bytes'),
  }));
  return { id: id(o), typename: str(o, 'typename', 256), nbytes: uint(o, 'nbytes'), shards, instances };
}

function repairStatus(v: unknown): RepairStatus {
  const o = plainObject(v, 'repair');
  return {
    leader: bool(o, 'leader'),
    underReplicated: uint(o, 'underReplicated'),
    lost: uint(o, 'lost'),
    bytesRepairing: uint(o, 'bytesRepairing'),
    bytesRepaired: uint(o, 'bytesRepaired'),
    copiesMade: uint(o, 'copiesMade'),
    rateBytesPerSec: uint(o, 'rateBytesPerSec'),
    replicasHere: uint(o, 'replicasHere'),
    recent: records(o, 'recent', (r) => ({ startedAt: uint(r, 'startedAt'), id: id(r), bytes: uint(r, 'bytes') })),
  };
}

/** A replication factor: absent, or 1 to MAX_REPLICAS copies. */
function replicas(h: Header): number | undefined {
  if (h.replicas === undefined) return undefined;
  const n = uint(h, 'replicas', MAX_REPLICAS);
  if (n < 1) throw bad('replicas', `a number of copies from 1 to ${MAX_REPLICAS}`, n);
  return n;
}

function replicaCopy(v: unknown, f: string): ReplicaCopy {
  const o = plainObject(v, f);
  return { id: id(o), instanceId: uint(o, 'instanceId', 0xffff) };
}

function counters(v: unknown, f: string): Record<string, number> {
  const o = plainObject(v, f);
  for (const k in o) uint(o, k);
  return o as Record<string, number>;
}

function status(h: Header): StoreStatus {
  const s = plainObject(h.status, 'status');
  const spill = plainObject(s.spill, 'spill');
  const recs = plainObject(s.records, 'records');
  const rpc = s.rpc === null ? null : plainObject(s.rpc, 'rpc');
  return {
    instanceId: uint(s, 'instanceId', 0xffff),
    storeId: str(s, 'storeId', 256),
    name: text(s, 'name'),
    hostname: text(s, 'hostname'),
    pid: uint(s, 'pid'),
    socket: text(s, 'socket', 4096),
    protocolVersion: uint(s, 'protocolVersion', 0xffff),
    memoryUsed: uint(s, 'memoryUsed'),
    memoryLimit: uint(s, 'memoryLimit'),
    memoryMapped: uint(s, 'memoryMapped'),
    memoryResident: uint(s, 'memoryResident'),
    reserved: bool(s, 'reserved'),
    segments: records(s, 'segments', (g) => ({
      id: uint(g, 'id', 0xffff),
      size: uint(g, 'size'),
      used: uint(g, 'used'),
      freeBlocks: uint(g, 'freeBlocks'),
      // stores from before --huge-pages leave it out
      hugePages: bool(g, 'hugePages', false),
    })),
    fragmentation: num(s, 'fragmentation'),
    largestBlock: uint(s, 'largestBlock'),
    objects: uint(s, 'objects'),
    blobs: uint(s, 'blobs'),
    entries: uint(s, 'entries'),
    names: uint(s, 'names'),
    connections: uint(s, 'connections'),
    nameWaiters: uint(s, 'nameWaiters'),
    tags: uint(s, 'tags'),
    tagWaiters: uint(s, 'tagWaiters'),
    spill: {
      dir: spill.dir === null ? null : text(spill, 'dir', 4096),
      objects: uint(spill, 'objects'),
      bytes: uint(spill, 'bytes'),
    },
    records: { bytes: uint(recs, 'bytes'), limit: uint(recs, 'limit') },
    counters: counters(s.counters, 'counters'),
    repair: repairStatus(s.repair),
    // Backend and RPC figures differ by backend and version: objects, passed on as the store sent them.
    meta: plainObject(s.meta, 'meta'),
    rpc: rpc === null ? null : { ...rpc, host: str(rpc, 'host', 256), port: uint(rpc, 'port', 65535) },
    uptimeMs: uint(s, 'uptimeMs'),
  };
}

function names(h: Header): Record<string, string> {
  const o = plainObject(h.names, 'names');
  for (const k in o) if (!isObjectId(o[k])) throw bad(`names.${k}`, 'an object id', o[k]);
  return o as Record<string, string>;
}

// ---- the message list ------------------------------------------------------------

interface Message<T extends RequestType> {
  request(h: Header): RequestOf<T>;
  reply(h: Header): ReplyOf<T>;
}

const MESSAGES: { [T in RequestType]: Message<T> } = {
  hello: {
    request: (h) => {
      const r: RequestOf<'hello'> = { t: 'hello', ...helloFields(h) };
      if (bool(h, 'attach', false)) r.attach = true;
      return r;
    },
    reply: (h) => ({
      version: uint(h, 'version', 0xffff),
      instanceId: uint(h, 'instanceId', 0xffff),
      storeId: str(h, 'storeId', 256),
      name: text(h, 'name'),
      token: str(h, 'token', 128),
      maxFrame: uint(h, 'maxFrame'),
      inlineLimit: uint(h, 'inlineLimit'),
      session: uint(h, 'session'),
      segments: uint(h, 'segments'),
      ...(h.attached === undefined ? {} : { attached: fdsReply(plainObject(h.attached, 'attached')) }),
    }),
  },
  create: {
    request: (h) => ({ t: 'create', rid: rid(h), size: uint(h, 'size') }),
    reply: (h) => ({ id: id(h), blob: blobLocation(h.blob, 'blob') }),
  },
  seal: {
    request: (h) => {
      const tag = optStr(h, 'tag');
      const reads = h.reads === undefined ? undefined : uint(h, 'reads', MAX_TAG_READS);
      if (reads !== undefined && tag === undefined) throw bad('reads', 'a tag beside it', undefined);
      return {
        t: 'seal',
        rid: rid(h),
        id: id(h),
        object: h.object === undefined ? undefined : objectSpec(h, 'object'),
        name: optStr(h, 'name'),
        persist: bool(h, 'persist', false),
        tag,
        reads,
      };
    },
    reply: idReply,
  },
  abort: { request: (h) => ({ t: 'abort', rid: rid(h), id: id(h) }), reply: empty },
  put: { request: (h) => ({ t: 'put', rid: rid(h), ...creating(h) }), reply: idReply },
  make: { request: (h) => ({ t: 'make', rid: rid(h), ...creating(h) }), reply: idReply },
  get: {
    request: (h) => ({ t: 'get', rid: rid(h), ids: ids(h, 'ids') }),
    reply: (h) => ({ objects: array(h, 'objects').map((o) => objectTree(o)) }),
  },
  release: { request: (h) => ({ t: 'release', rid: rid(h), ids: ids(h, 'ids') }), reply: empty },
  delete: {
    request: (h) => ({ t: 'delete', rid: rid(h), ids: ids(h, 'ids'), deep: bool(h, 'deep', true) }),
    reply: empty,
  },
  putName: {
    request: (h) => ({
      t: 'putName',
      rid: rid(h),
      name: str(h, 'name'),
      id: id(h),
      overwrite: bool(h, 'overwrite', false),
    }),
    reply: empty,
  },
  getName: {
    request: (h) => ({
      t: 'getName',
      rid: rid(h),
      name: str(h, 'name'),
      wait: bool(h, 'wait', false),
      timeoutMs: h.timeoutMs === undefined ? 0 : uint(h, 'timeoutMs', MAX_TIMEOUT_MS),
    }),
    reply: idReply,
  },
  dropName: { request: (h) => ({ t: 'dropName', rid: rid(h), name: str(h, 'name') }), reply: idReply },
  listNames: {
    request: (h) => ({ t: 'listNames', rid: rid(h), prefix: h.prefix === undefined ? '' : text(h, 'prefix') }),
    reply: (h) => ({ names: names(h) }),
  },
  list: {
    request: (h) => ({
      t: 'list',
      rid: rid(h),
      typename: optStr(h, 'typename', 256),
      limit: listLimit(h),
      cursor: h.cursor === undefined ? undefined : id(h, 'cursor'),
    }),
    reply: (h) => ({ objects: records(h, 'objects', summary), next: h.next === undefined ? undefined : id(h, 'next') }),
  },
  status: { request: (h) => ({ t: 'status', rid: rid(h) }), reply: (h) => ({ status: status(h) }) },
  persist: {
    request: (h) => ({ t: 'persist', rid: rid(h), ids: ids(h, 'ids'), replicas: replicas(h) }),
    reply: empty,
  },
  migrate: { request: (h) => ({ t: 'migrate', rid: rid(h), id: id(h) }), reply: idReply },
  instances: {
    request: (h) => ({ t: 'instances', rid: rid(h) }),
    reply: (h) => ({ instances: records(h, 'instances', instance) }),
  },
  listGlobal: {
    request: (h) => ({
      t: 'listGlobal',
      rid: rid(h),
      typename: optStr(h, 'typename', 256),
      instanceId: h.instanceId === undefined ? undefined : uint(h, 'instanceId', 0xffff),
      limit: listLimit(h),
    }),
    reply: (h) => ({ objects: records(h, 'objects', globalObject) }),
  },
  createDataset: {
    request: (h) => {
      const members = ids(h, 'members');
      if (members.length === 0) throw bad('members', 'at least one shard id', members);
      return {
        t: 'createDataset',
        rid: rid(h),
        name: optStr(h, 'name'),
        members,
        meta: meta(h, 'meta'),
        replicas: replicas(h),
      };
    },
    reply: idReply,
  },
  replicate: {
    request: (h) => ({ t: 'replicate', rid: rid(h), id: id(h), from: replicaCopy(h.from, 'from') }),
    reply: (h) => ({ id: id(h), added: bool(h, 'added') }),
  },
  locate: {
    request: (h) => {
      const r = {
        t: 'locate' as const,
        rid: rid(h),
        id: h.id === undefined ? undefined : id(h),
        name: optStr(h, 'name'),
      };
      if ((r.id === undefined) === (r.name === undefined))
        throw bad('id/name', 'exactly one of id and name', undefined);
      return r;
    },
    reply: (h) => ({ locations: locations(h) }),
  },
  unpinned: { request: (h) => ({ t: 'unpinned', rid: rid(h) }), reply: empty },
  fds: {
    request: (h) => {
      const segs = h.segments;
      const fastpath = bool(h, 'fastpath', false);
      const ring = bool(h, 'ring', false);
      // Asking for the fast path or the put ring alone names no segment.
      const least = fastpath || ring ? 0 : 1;
      if (!Array.isArray(segs) || segs.length < least || segs.length > 64)
        throw bad('segments', `${least} to 64 segment ids`, segs);
      for (const s of segs)
        if (typeof s !== 'number' || !Number.isInteger(s) || s < 0) throw bad('segments[]', 'a segment id', s);
      const out: RequestOf<'fds'> = { t: 'fds', rid: rid(h), token: str(h, 'token', 128), segments: segs as number[] };
      if (fastpath) out.fastpath = true;
      if (ring) out.ring = true;
      return out;
    },
    reply: fdsReply,
  },
  lease: {
    request: (h) => ({ t: 'lease', rid: rid(h) }),
    reply: (h) => ({
      slab: blobLocation(h.slab, 'slab'),
      lease: uint(h, 'lease', 0x7fff_ffff),
      first: uint(h, 'first', 2 ** 48 - 1),
      ids: uint(h, 'ids', 0xffff),
    }),
  },
  ring: { request: (h) => ({ t: 'ring', rid: rid(h) }), reply: empty },
  endScope: { request: (h) => ({ t: 'endScope', rid: rid(h), scope: str(h, 'scope') }), reply: empty },
  claimScope: { request: (h) => ({ t: 'claimScope', rid: rid(h), scope: str(h, 'scope') }), reply: empty },
};

/** Every IPC message type, for docs/PROTOCOL.md's test. */
export const IPC_MESSAGE_TYPES = Object.keys(MESSAGES) as RequestType[];

export function isRequestType(t: unknown): t is RequestType {
  return typeof t === 'string' && Object.hasOwn(MESSAGES, t);
}

/** Validates a decoded frame header; throws ERR_PROTOCOL for unknown types, ERR_BAD_REQUEST for bad fields. */
export function decodeRequest(h: Header): Request {
  const t = h.t;
  if (!isRequestType(t)) {
    throw new TrellisError('ERR_PROTOCOL', `unknown request type ${JSON.stringify(String(t).slice(0, 64))}`);
  }
  return MESSAGES[t].request(h);
}

/**
 * A request frame from a typed body. The rid goes in front of the body's own
 * JSON, so the caller's object is never written to. `noReply` asks the store
 * not to answer (release).
 */
export function encodeRequest(rid: number, body: RequestBody, payload?: Uint8Array, noReply = false): Buffer {
  const json = JSON.stringify(body);
  return encodeJsonFrame(`{"rid":${rid},${noReply ? '"noReply":true,' : ''}${json.slice(1)}`, payload);
}

/** The `ok` answer to request `rid`, from its typed fields (the store side of every reply decoder). */
export function okReply<T extends RequestType>(rid: number, fields: ReplyOf<T>): Header {
  return { t: 'ok', rid, ...fields };
}

/** The `err` answer to request `rid` (0: to no request, the connection is given up). */
export function errorReply(rid: number, err: TrellisError): Header {
  return { t: 'err', rid, code: err.code, message: err.message };
}

/** An `err` answer as the TrellisError it carries; a malformed one is ERR_PROTOCOL. */
export function decodeError(h: Header): TrellisError {
  if (typeof h.code !== 'string' || typeof h.message !== 'string') {
    return new TrellisError('ERR_PROTOCOL', 'the store sent an error answer without a code and message');
  }
  return TrellisError.fromPayload({ code: h.code, message: h.message });
}

/** Checks an `ok` answer with `decode`; a store that answers badly broke the protocol (ERR_PROTOCOL). */
export function checkReply<R>(what: string, h: Header, decode: (h: Header) => R): R {
  if (h.t !== 'ok') throw new TrellisError('ERR_PROTOCOL', `the answer to ${what} is not "ok" but ${String(h.t)}`);
  try {
    return decode(h);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new TrellisError('ERR_PROTOCOL', `the store's answer to ${what} is malformed: ${message}`);
  }
}

/** The checked fields of the `ok` answer to a request of type `t`. */
export function decodeReply<T extends RequestType>(t: T, h: Header): ReplyOf<T> {
  return checkReply(t, h, MESSAGES[t].reply as (h: Header) => ReplyOf<T>);
}
