/**
 * Migration: a store pulls an object from the store that owns it, server to
 * server over RPC, and recreates it locally (same typename, metadata and
 * member structure, new local ids).
 *
 * The transfer is one `get` on the store's connection to the source (kept
 * open between requests, src/store/peer-channels.ts). When the answer
 * header arrives, every blob of the object is allocated in the local arena,
 * unsealed and owned by the migration, and the bytes that follow are read
 * from the socket straight into those blobs. Only when the last byte is in
 * are the blobs sealed and the objects above them made, bottom-up; a
 * transfer that fails midway (the source dies, the connection drops, memory
 * runs out) aborts every blob it allocated, so nothing half-made is ever
 * visible. Concurrent migrations of one object share one transfer; a later
 * one returns the local copy while it exists.
 *
 * @example
 *   const localId = await migrateFrom(store, { host: '127.0.0.2', port: 7000 }, token, remoteId);
 */

import type { RpcChannel } from '../client/rpc-channel.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { isObjectId } from '../protocol/messages.js';
import type { ObjectRecord, RpcEndpoint } from '../protocol/records.js';
import { BLOB_TYPENAME, decodeGetAnswer, type RpcGetAnswer, type RpcRequestBody } from '../protocol/rpc-messages.js';
import type { TlsMaterial } from '../tls-config.js';
import { type PeerChannelStats, PeerChannels } from './peer-channels.js';
import { prefault, worthPrefault } from './prefault.js';
import type { StoreServer } from './store-server.js';

export interface MigrateOptions {
  /** Connect from this local address (the migrating store's own RPC host). */
  localAddress?: string;
  /** Connect and handshake timeout (default 10 s). */
  timeoutMs?: number;
  /** Fail when the source sends nothing for this long mid-transfer (default 60 s). */
  idleTimeoutMs?: number;
  /** Speak TLS to the source: verify it with `ca`, present `cert` (a store's own, for mutual TLS). */
  tls?: TlsMaterial;
}

export interface MigrationStats {
  /** Migrations that completed (each brought one object here). */
  migrations: number;
  /** Objects recreated here (tensors, tables, composites; blobs are counted apart). */
  objectsIn: number;
  /** Blobs received. */
  blobsIn: number;
  /** Blob bytes received. */
  bytesIn: number;
  /** Migrations that joined a transfer already running for the same object. */
  coalesced: number;
  /** Migrations answered with a local copy made earlier. */
  reused: number;
  /** Migrations that failed (nothing of them was kept). */
  failed: number;
  /** Transfers running now. */
  active: number;
  /** Blob bytes the running transfers have received so far. */
  receiving: number;
  /** This store's connections to other stores (opened, reused, retried after a peer restart). */
  peers: PeerChannelStats;
}

export class Migrator {
  private readonly running = new Map<string, Promise<string>>();
  /** Remote id → the source store run it came from and the local copy made of it. */
  private readonly copies = new Map<string, { storeId: string; local: string }>();
  private readonly peers = new PeerChannels();
  /** Transfer's connection id → the blob bytes it has received so far. */
  private readonly inFlight = new Map<number, () => number>();
  private readonly counters = {
    migrations: 0,
    objectsIn: 0,
    blobsIn: 0,
    bytesIn: 0,
    coalesced: 0,
    reused: 0,
    failed: 0,
  };
  private closed = false;

  constructor(readonly store: StoreServer) {}

  stats(): MigrationStats {
    let receiving = 0;
    for (const got of this.inFlight.values()) receiving += got();
    return { ...this.counters, active: this.running.size, receiving, peers: this.peers.stats() };
  }

  /** Copies `remoteId` from the store at `endpoint` into this store; resolves with the local id. */
  migrate(endpoint: RpcEndpoint, token: string, remoteId: string, opts: MigrateOptions = {}): Promise<string> {
    if (!isObjectId(remoteId)) return Promise.reject(invalidParameter('remoteId', 'an object id', remoteId));
    if (typeof endpoint?.host !== 'string' || !Number.isInteger(endpoint.port)) {
      return Promise.reject(invalidParameter('endpoint', 'an RPC endpoint {host, port}', endpoint));
    }
    if (typeof token !== 'string' || token.length === 0) {
      return Promise.reject(invalidParameter('token', 'the shared RPC token', token));
    }
    if (this.closed) return Promise.reject(new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down'));
    const key = `${endpoint.host}:${endpoint.port}/${remoteId}`;
    const running = this.running.get(key);
    if (running) {
      this.counters.coalesced++;
      return running;
    }
    const job = this.transfer(endpoint, token, remoteId, opts).finally(() => this.running.delete(key));
    this.running.set(key, job);
    return job;
  }

  /** The local copy of `remoteId` made here, while it exists. */
  copyOf(remoteId: string): string | undefined {
    const c = this.copies.get(remoteId);
    return c !== undefined && this.store.table.has(c.local) ? c.local : undefined;
  }

  /**
   * One request to another store (replication asks a store to make a copy,
   * or to delete one); resolves with the answer's header. The request may
   * run as long as the copy it asks for takes.
   */
  async ask(endpoint: RpcEndpoint, token: string, body: RpcRequestBody, opts: MigrateOptions = {}) {
    if (this.closed) throw new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down');
    return this.peers.use(endpoint.host, endpoint.port, this.channelOptions(token, opts), async (ch) => {
      return (await ch.request(body, { waits: true })).header;
    });
  }

  private channelOptions(token: string, opts: MigrateOptions) {
    return {
      token,
      client: `store ${this.store.storeId}`,
      localAddress: opts.localAddress,
      timeoutMs: opts.timeoutMs,
      idleTimeoutMs: opts.idleTimeoutMs,
      tls: opts.tls,
    };
  }

  /** Stops every transfer (each fails and leaves nothing behind). Safe to call twice. */
  close(): void {
    this.closed = true;
    this.peers.close();
  }

  private async transfer(endpoint: RpcEndpoint, token: string, remoteId: string, opts: MigrateOptions) {
    try {
      return await this.peers.use(endpoint.host, endpoint.port, this.channelOptions(token, opts), (ch, retire) =>
        this.transferOn(ch, retire, remoteId),
      );
    } catch (e) {
      this.counters.failed++;
      throw e;
    }
  }

  private async transferOn(ch: RpcChannel, retire: () => void, remoteId: string): Promise<string> {
    const store = this.store;
    // The migration's blobs belong to a connection id of its own until sealed.
    const conn = store.newConnectionId();
    // Raw answers on a channel arrive one after another: from our header on, the next bytes are ours.
    let base = -1;
    let total = 0;
    this.inFlight.set(conn, () => (base < 0 ? 0 : Math.min(ch.bytesReceived - base, total)));
    let done = false;
    try {
      const source = String(ch.hello.storeId);
      const copy = this.copies.get(remoteId);
      // The same id from another run of the source store is another object.
      if (copy !== undefined && copy.storeId === source && store.table.has(copy.local)) {
        this.counters.reused++;
        done = true;
        return copy.local;
      }
      let answer: RpcGetAnswer | null = null;
      const blobs: string[] = [];
      let receiving = true;
      const a = await ch
        .request(
          { t: 'get', ids: [remoteId] },
          {
            alloc: (h, sizes) => {
              answer = decodeGetAnswer(h, [remoteId]);
              base = ch.bytesReceived;
              for (const n of sizes) total += n;
              const views = sizes.map((size) => {
                const e = store.table.createBlob(size, conn);
                blobs.push(e.id);
                return store.arena.view(e.loc!);
              });
              // When asked for: a libuv thread takes the pages' faults (hypervisor faults on a VM) ahead of the socket.
              if (worthPrefault(store.opts, sizes)) void prefault(views, () => receiving);
              return views;
            },
          },
        )
        .finally(() => {
          receiving = false;
        });
      answer ??= decodeGetAnswer(a.header, [remoteId]);
      const root = this.rebuild(answer, blobs, conn);
      this.copies.set(remoteId, { storeId: source, local: root });
      this.counters.migrations++;
      this.counters.blobsIn += blobs.length;
      for (const n of answer.raw) this.counters.bytesIn += n;
      done = true;
      return root;
    } finally {
      this.inFlight.delete(conn);
      // A failed transfer's channel takes no new request and closes once the others on it are done,
      // so no read can land in its blobs after they go, and the source drops what it pinned for it.
      if (!done) retire();
      store.connectionClosed(conn);
    }
  }

  /** Seals the received blobs and makes the objects above them, bottom-up; all or nothing. */
  private rebuild(answer: RpcGetAnswer, blobs: string[], conn: number): string {
    const t = this.store.table;
    const local = new Map<string, string>();
    answer.blobs.forEach((remote, i) => {
      local.set(remote, blobs[i]);
    });
    // A Blob record's metadata is the blob's own, set as it is sealed.
    const blobMeta = new Map<string, Record<string, unknown>>();
    const collect = (tree: ObjectRecord): void => {
      if (tree.typename === BLOB_TYPENAME) blobMeta.set(tree.id, tree.meta);
      else for (const m of tree.members) collect(m);
    };
    collect(answer.objects[0]);
    const made: string[] = [];
    const build = (tree: ObjectRecord): string => {
      const known = local.get(tree.id);
      if (known !== undefined) return known;
      const members = tree.members.map(build);
      const e = t.makeObject({ typename: tree.typename, meta: tree.meta, members });
      made.push(e.id);
      local.set(tree.id, e.id);
      return e.id;
    };
    try {
      answer.blobs.forEach((remote, i) => {
        t.sealBlob(blobs[i], conn, blobMeta.get(remote) ?? {});
      });
      const root = build(answer.objects[0]);
      this.counters.objectsIn += made.length;
      return root;
    } catch (e) {
      const sealed = blobs.filter((id) => t.has(id) && t.lookup(id).sealed);
      try {
        t.delete([...made, ...sealed], false);
      } catch {
        // the unsealed rest is aborted with the migration's connection
      }
      throw e;
    }
  }
}

const migrators = new WeakMap<StoreServer, Migrator>();

/** The store's migrator (one per store), for its counters. */
export function migratorOf(store: StoreServer): Migrator {
  let m = migrators.get(store);
  if (!m) {
    m = new Migrator(store);
    migrators.set(store, m);
  }
  return m;
}

/**
 * Pulls `remoteId` (recursively, for composites) from the store serving RPC
 * at `endpoint` into `store`, and returns the local id.
 */
export function migrateFrom(
  store: StoreServer,
  endpoint: RpcEndpoint,
  token: string,
  remoteId: string,
  opts: MigrateOptions = {},
): Promise<string> {
  return migratorOf(store).migrate(endpoint, token, remoteId, opts);
}
