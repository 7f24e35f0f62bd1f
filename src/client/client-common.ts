/**
 * What the IPC client (TrellisClient) and the RPC client (RemoteClient) do
 * alike: every call that is only a request and its answer — composites,
 * deletes, names, listings, status and the cluster calls — and the lifetime
 * (close, the check that the client is open). Each client says how a request
 * travels (`send`); argument checks happen here, once, before anything is
 * sent, and every answer goes through its reply decoder (protocol/messages.ts).
 */

import { encodeNeedsArrow, loadArrowCodec } from '../codecs/arrow-loader.js';
import type { EncodedValue } from '../codecs/codec.js';
import { encodeValue, type PutValue, type StoreValue } from '../codecs/value.js';
import { invalidParameter, TrellisError } from '../errors.js';
import {
  BLOB_TYPENAME,
  DEFAULT_LIST_LIMIT,
  decodeReply,
  isObjectId,
  MAX_REPLICAS,
  MAX_TAG_READS,
  type ReplyOf,
  type RequestBody,
} from '../protocol/messages.js';
import type { GlobalObjectInfo, InstanceInfo, Locations, ObjectSummary, StoreStatus } from '../protocol/records.js';

export interface PutOptions {
  /** Bind this name to the new object in the same request (a named object is also persisted). */
  name?: string;
  /** Publish the object to the metadata service in the same request, so every store can find it. */
  persist?: boolean;
}

/** What a writer's seal takes beyond PutOptions: a store-local tag (src/store/tags.ts). */
export interface SealOptions extends PutOptions {
  /**
   * Tag the sealed object in this store only (never published): RPC readers
   * may wait for the tag (RemoteClient.read), and the object is deleted when
   * this client disconnects.
   */
  tag?: string;
  /** With a tag: the store deletes the object after this many complete RPC reads. */
  reads?: number;
}

export interface ObjectSpecInput {
  typename: string;
  meta?: Record<string, unknown>;
  members?: string[];
}

export function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 1024) {
    throw invalidParameter('name', 'a string of 1 to 1024 characters', name);
  }
}

/** The `name` / `persist` fields of a creating request, checked. */
export function putFields(opts: PutOptions): { name?: string; persist?: boolean } {
  const out: { name?: string; persist?: boolean } = {};
  if (opts.persist !== undefined) {
    if (typeof opts.persist !== 'boolean') throw invalidParameter('persist', 'a boolean', opts.persist);
    out.persist = opts.persist;
  }
  if (opts.name !== undefined) {
    checkName(opts.name);
    out.name = opts.name;
  }
  return out;
}

/** A replication factor as the caller gave it: absent, or 1 to MAX_REPLICAS copies. */
function replicaCount(n: unknown): number | undefined {
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > MAX_REPLICAS) {
    throw invalidParameter('replicas', `an integer from 1 to ${MAX_REPLICAS}`, n);
  }
  return n as number;
}

/** The fields of a seal: putFields plus the tag and its reads, checked. */
export function sealFields(opts: SealOptions): { name?: string; persist?: boolean; tag?: string; reads?: number } {
  const out: { name?: string; persist?: boolean; tag?: string; reads?: number } = putFields(opts);
  if (opts.tag !== undefined) {
    if (typeof opts.tag !== 'string' || opts.tag.length === 0 || opts.tag.length > 1024) {
      throw invalidParameter('tag', 'a string of 1 to 1024 characters', opts.tag);
    }
    out.tag = opts.tag;
  }
  if (opts.reads !== undefined) {
    if (out.tag === undefined) throw invalidParameter('reads', 'given only with a tag', opts.reads);
    if (!Number.isInteger(opts.reads) || opts.reads < 1 || opts.reads > MAX_TAG_READS) {
      throw invalidParameter('reads', `an integer in [1, ${MAX_TAG_READS}]`, opts.reads);
    }
    out.reads = opts.reads;
  }
  return out;
}

function idList(ids: string | string[]): string[] {
  const list = Array.isArray(ids) ? ids : [ids];
  for (const id of list) if (!isObjectId(id)) throw invalidParameter('id', 'an object id', id);
  return list;
}

/** Requests that mean the same over IPC and RPC, answered the same way. */
type CommonRequest =
  | 'make'
  | 'delete'
  | 'putName'
  | 'getName'
  | 'dropName'
  | 'listNames'
  | 'list'
  | 'status'
  | 'persist'
  | 'migrate'
  | 'instances'
  | 'listGlobal'
  | 'createDataset'
  | 'locate';

export abstract class ClientCommon {
  private closing: Promise<void> | null = null;

  /**
   * Sends one request and resolves with the answer (its header not yet
   * checked). `waits` marks a request the store may hold open indefinitely
   * (getName with wait). A plain pass-through to the channel: no async hop of
   * its own on the round trip.
   */
  protected abstract send(
    body: RequestBody<CommonRequest>,
    waits?: boolean,
  ): Promise<{ header: Record<string, unknown> }>;

  /** Drops the connection and everything held through it (close() calls it once). */
  protected abstract disconnect(): void;

  /** Many objects in one round trip. */
  abstract getMany(ids: string[]): Promise<StoreValue[]>;

  /** Gives back one reference taken by get. */
  abstract release(id: string): Promise<void>;

  /** Sends a request and checks its answer with the reply's decoder. */
  private async ask<B extends RequestBody<CommonRequest>>(body: B, waits = false): Promise<ReplyOf<B['t']>> {
    this.checkOpen();
    return decodeReply<B['t']>(body.t, (await this.send(body, waits)).header);
  }

  /** ERR_CLOSED once close() was called: every method checks it first. */
  protected checkOpen(): void {
    if (this.closing) throw new TrellisError('ERR_CLOSED', 'the client was closed');
  }

  /** The object: Tensor, arrow.Table, Uint8Array (Blob) or StoredObject (views over IPC, copies over RPC). */
  async get(id: string): Promise<StoreValue> {
    const [v] = await this.getMany([id]);
    return v;
  }

  /** The bytes of a Blob (a read-only view over IPC, a copy over RPC). */
  async getBlob(id: string): Promise<Uint8Array> {
    const v = await this.get(id);
    if (!(v instanceof Uint8Array)) {
      await this.release(id);
      throw new TrellisError('ERR_BAD_REQUEST', `${id} is not a Blob`);
    }
    return v;
  }

  /** Closes the connection; calls in flight fail with ERR_CLOSED, references held go. Safe to call twice. */
  close(): Promise<void> {
    // Calls fail with ERR_CLOSED from now on; the connection goes once what it is setting up has settled.
    this.closing ??= this.settled().then(() => this.disconnect());
    return this.closing;
  }

  /** What close() waits for before it disconnects (a side channel still opening); nothing by default. */
  protected settled(): Promise<unknown> {
    return Promise.resolve();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Stores one encoded value (one blob plus metadata) the way this client's connection can. */
  protected abstract putEncoded(enc: EncodedValue, opts: PutOptions): Promise<string>;

  /** Stores a tensor, TypedArray (as a 1-d tensor) or Arrow table and returns its id. */
  async put(value: PutValue, opts: PutOptions = {}): Promise<string> {
    if (encodeNeedsArrow(value)) await loadArrowCodec();
    return this.putEncoded(encodeValue(value), opts);
  }

  /** Stores raw bytes as a Blob. */
  async putBlob(bytes: Uint8Array, opts: PutOptions = {}): Promise<string> {
    if (!(bytes instanceof Uint8Array)) throw invalidParameter('bytes', 'a Uint8Array', bytes);
    return this.putEncoded(
      { typename: BLOB_TYPENAME, meta: {}, size: bytes.byteLength, contiguous: bytes, write: (d) => d.set(bytes) },
      opts,
    );
  }

  /** Records an object over existing members (a composite), e.g. a dataset of shards. */
  async putObject(spec: ObjectSpecInput, opts: PutOptions = {}): Promise<string> {
    if (typeof spec?.typename !== 'string' || spec.typename.length === 0) {
      throw invalidParameter('spec.typename', 'a non-empty string', spec?.typename);
    }
    const members = spec.members ?? [];
    for (const m of members) if (!isObjectId(m)) throw invalidParameter('spec.members[]', 'an object id', m);
    const f = await this.ask({
      t: 'make',
      object: { typename: spec.typename, meta: spec.meta ?? {}, members },
      ...putFields(opts),
    });
    return f.id;
  }

  /** Deletes objects; with deep (default), also members no other object uses. Held objects go on their last release. */
  async delete(ids: string | string[], opts: { deep?: boolean } = {}): Promise<void> {
    await this.ask({ t: 'delete', ids: idList(ids), deep: opts.deep ?? true });
  }

  // ---- names ----------------------------------------------------------------

  async putName(name: string, id: string, opts: { overwrite?: boolean } = {}): Promise<void> {
    checkName(name);
    if (!isObjectId(id)) throw invalidParameter('id', 'an object id', id);
    await this.ask({ t: 'putName', name, id, overwrite: opts.overwrite ?? false });
  }

  /** The id bound to a name; with wait, waits for it to appear (timeoutMs 0 = no limit). */
  async getName(name: string, opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<string> {
    checkName(name);
    const timeoutMs = opts.timeoutMs ?? 0;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) {
      throw invalidParameter('timeoutMs', 'a non-negative integer', timeoutMs);
    }
    const wait = opts.wait ?? false;
    const f = await this.ask({ t: 'getName', name, wait, timeoutMs }, wait);
    return f.id;
  }

  async dropName(name: string): Promise<void> {
    checkName(name);
    await this.ask({ t: 'dropName', name });
  }

  /**
   * Names starting with `prefix` and their ids. Every name is an own key of
   * the record, even `__proto__` or `constructor`: read it with
   * Object.entries or Object.hasOwn, not `in`.
   */
  async listNames(prefix = ''): Promise<Record<string, string>> {
    return (await this.ask({ t: 'listNames', prefix })).names;
  }

  /**
   * Objects in the store, oldest first, up to `limit` (default 10,000),
   * following the store's pages (each about 4 MiB of records at most).
   */
  async list(opts: { typename?: string; limit?: number } = {}): Promise<ObjectSummary[]> {
    const limit = opts.limit ?? DEFAULT_LIST_LIMIT;
    const out: ObjectSummary[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.listPage({ typename: opts.typename, limit: limit - out.length, cursor });
      out.push(...page.objects);
      cursor = page.next;
    } while (cursor !== undefined && out.length < limit);
    return out;
  }

  /**
   * One page of objects after `cursor` (the `next` of the page before; none:
   * from the start). `next` is absent on the last page.
   *
   * @example
   *   for (let p = await c.listPage(); ; p = await c.listPage({ cursor: p.next })) {
   *     use(p.objects);
   *     if (p.next === undefined) break;
   *   }
   */
  async listPage(
    opts: { typename?: string; limit?: number; cursor?: string } = {},
  ): Promise<{ objects: ObjectSummary[]; next?: string }> {
    if (opts.cursor !== undefined && !isObjectId(opts.cursor)) {
      throw invalidParameter('opts.cursor', 'an object id', opts.cursor);
    }
    const r = await this.ask({ t: 'list', typename: opts.typename, limit: opts.limit, cursor: opts.cursor });
    return r.next === undefined ? { objects: r.objects } : { objects: r.objects, next: r.next };
  }

  async status(): Promise<StoreStatus> {
    return (await this.ask({ t: 'status' })).status;
  }

  // ---- cluster ----------------------------------------------------------------

  /**
   * Publishes objects (and their members) so every store in the cluster can
   * find them. With `replicas`, each is then kept as that many full copies
   * (the primary counted) on distinct stores, the least loaded by memory;
   * resolves once every copy is made.
   *
   * @example
   *   await client.persist(id, { replicas: 2 }); // survives the loss of any one store
   */
  async persist(ids: string | string[], opts: { replicas?: number } = {}): Promise<void> {
    await this.ask({ t: 'persist', ids: idList(ids), replicas: replicaCount(opts.replicas) });
  }

  /**
   * Copies a persisted object from the store that holds it into the store this
   * client talks to (server to server, over RPC) and returns the local id; an
   * object already there is returned as is. Then `get` it as usual.
   */
  async migrate(id: string): Promise<string> {
    if (!isObjectId(id)) throw invalidParameter('id', 'an object id', id);
    return (await this.ask({ t: 'migrate', id })).id;
  }

  /** The live stores of the cluster. */
  async instances(): Promise<InstanceInfo[]> {
    return (await this.ask({ t: 'instances' })).instances;
  }

  /** Persisted objects cluster-wide, with whether their store is alive. */
  async listGlobal(opts: { typename?: string; instanceId?: number; limit?: number } = {}): Promise<GlobalObjectInfo[]> {
    const f = await this.ask({
      t: 'listGlobal',
      typename: opts.typename,
      instanceId: opts.instanceId,
      limit: opts.limit,
    });
    return f.objects;
  }

  /**
   * A dataset: a named global object whose members are shards that may live
   * on different stores. Local shards are persisted on the way; with
   * `replicas`, every shard is kept as that many copies on distinct stores.
   */
  async createDataset(
    name: string | undefined,
    shards: string[],
    opts: { meta?: Record<string, unknown>; replicas?: number } = {},
  ): Promise<string> {
    if (name !== undefined) checkName(name);
    if (!Array.isArray(shards) || shards.length === 0) {
      throw invalidParameter('shards', 'a non-empty array of object ids', shards);
    }
    for (const id of shards) if (!isObjectId(id)) throw invalidParameter('shards[]', 'an object id', id);
    const replicas = replicaCount(opts.replicas);
    return (await this.ask({ t: 'createDataset', name, members: shards, meta: opts.meta ?? {}, replicas })).id;
  }

  /** Which stores hold which shards of a dataset (or a persisted object), and how many bytes each. */
  async locate(idOrName: string): Promise<Locations> {
    if (typeof idOrName !== 'string' || idOrName.length === 0) {
      throw invalidParameter('idOrName', 'an object id or a name', idOrName);
    }
    const f = await this.ask(isObjectId(idOrName) ? { t: 'locate', id: idOrName } : { t: 'locate', name: idOrName });
    return f.locations;
  }
}
