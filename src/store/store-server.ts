/**
 * The store daemon: owns the arena, the object table and the names, and
 * serves clients on a UNIX socket. Segment fds reach clients over the fd
 * channel (a second, short-lived connection on the same socket, see
 * docs/PROTOCOL.md), never over the request connection.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, statSync, unlinkSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { storeServing, storeStopped } from '../client/stores-in-thread.js';
import { TrellisError } from '../errors.js';
import { EtcdMeta } from '../meta/etcd-meta.js';
import { LocalMeta } from '../meta/local-meta.js';
import type { MetaService } from '../meta/meta-service.js';
import { MAX_SEGMENT_SIZE, native } from '../native.js';
import { type Logger, silentLogger } from '../observe/logger.js';
import { PIN_BYTES } from '../protocol/fast-directory.js';
import { DEFAULT_MAX_FRAME, encodeFrame } from '../protocol/frame.js';
import { type FdsReply, okReply, PROTOCOL_VERSION, type ReplyOf, type Request } from '../protocol/messages.js';
import { RING_BYTES } from '../protocol/put-ring.js';
import type { RepairStatus, RpcEndpoint, StoreStatus } from '../protocol/records.js';
import { loadTls, type TlsFiles, type TlsMaterial } from '../tls-config.js';
import { Arena, type Segment } from './arena.js';
import { Cluster } from './cluster.js';
import { Connection, type RequestHandler } from './connection.js';
import { FastDirectory } from './fast-directory.js';
import { IdAllocator } from './ids.js';
import { DEFAULT_FRAME_TIMEOUT_MS, DEFAULT_MAX_BUFFERED, InputBudget } from './input-budget.js';
import { socketFd } from './net-handle.js';
import { BLOB_TYPENAME, type Entry, ObjectTable } from './object-table.js';
import { PinBoard } from './pin-board.js';
import { PutRings } from './put-rings.js';
import { noRepairStatus, Repairer } from './repair.js';
import { SpillDir } from './spill.js';
import { StoreTraffic, startTimer, type Transport, timed } from './store-traffic.js';
import { TagTable } from './tags.js';

export interface StoreOptions {
  /** Path of the UNIX socket to listen on. */
  socket: string;
  /** Memory limit of the arena in bytes. */
  size: number;
  /** Node name reported in status. */
  name?: string;
  /** Size of each arena segment (default min(size, 1 GiB)); at most 4 GiB. */
  segmentSize?: number;
  /** Allocate and fault in the whole arena at start. */
  reserve?: boolean;
  /** With reserve: put the arena on 2 MiB huge pages where the machine's pool (vm.nr_hugepages) has them. */
  hugePages?: boolean;
  /** Fault a migration's or RPC put's blobs in on a libuv thread ahead of the socket (default false; store/prefault.ts). */
  prefault?: boolean;
  /** Milliseconds freed memory stays warm before it goes back to the OS (default 1000; 0: at once). */
  punchDelayMs?: number;
  /** Spill unreferenced sealed blobs here when memory runs out. */
  spillDir?: string;
  /** File mode of the socket (default 0o600). */
  socketMode?: number;
  /** Group (name resolved by the caller, or gid) that owns the socket. */
  socketGid?: number;
  /** Largest frame accepted after hello (default 16 MiB; before hello 64 KiB). */
  maxFrame?: number;
  /** Most bytes of unfinished request frames all connections together may hold (default 256 MiB). */
  maxBuffered?: number;
  /** Milliseconds a frame may take to arrive once its first byte is in (default 30 s). */
  frameTimeoutMs?: number;
  /** Most bytes of object records (metadata and member lists, on the heap) all objects may take (default 256 MiB). */
  maxRecordBytes?: number;
  /** Instance id with the local backend, the top 16 bits of every object id (default 0); etcd assigns its own. */
  instanceId?: number;
  /** Metadata backend: 'local' (default) or 'etcd://HOST:PORT'. */
  meta?: string;
  /** Key prefix in etcd, so deployments can share one etcd (default /trellis/default). */
  metaPrefix?: string;
  /** Lease TTL in seconds for the etcd registration (default 10). */
  leaseTtl?: number;
  /** Serve remote clients and other stores over TCP on this port (0: any free port). */
  rpcPort?: number;
  /** Address to bind the RPC port to (default 127.0.0.1). */
  rpcHost?: string;
  /** Shared secret for RPC, between clients and stores alike. */
  token?: string;
  /** Where the store logs (default: nowhere); `trellis store` passes a pino logger. */
  logger?: Logger;
  /**
   * Serve RPC over TLS with these PEM files, and verify peer stores with `ca`
   * when migrating from them (presenting `cert`); `clientAuth` requires every
   * RPC peer to present a certificate signed by `ca` (mutual TLS).
   */
  tls?: TlsFiles;
  /** Offer clients the put ring (puts of small objects with no round trip; default true). */
  putRing?: boolean;
  /** Repair copies at most this many bytes per second, cluster-wide (default 128 MiB/s). */
  repairRate?: number;
  /** How often each store scans the replica sets for repair (default 1000 ms). */
  repairIntervalMs?: number;
}

/** The RPC side plugs in here (src/rpc/), so the store does not depend on it. */
export interface RpcAttachment {
  address(): RpcEndpoint;
  close(): Promise<void>;
  describe?(): Record<string, unknown>;
}

export type RpcStarter = (
  store: StoreServer,
  opts: { host: string; port: number; token: string; tls?: TlsMaterial },
) => Promise<RpcAttachment>;

/** Default of StoreOptions.maxRecordBytes. */
export const DEFAULT_MAX_RECORD_BYTES = 256 * 1024 * 1024;

/** Bytes a put may carry inline; larger values go through create + seal. */
export const INLINE_LIMIT = 256 * 1024;
/** Segments whose fds an attaching hello carries (a client asks the fd channel for the rest). */
const ATTACH_SEGMENTS = 8;

export class StoreServer implements RequestHandler {
  readonly arena: Arena;
  readonly table: ObjectTable;
  readonly ids: IdAllocator;
  readonly cluster: Cluster;
  /** Store-local tags (exchanges between nodes), never published. */
  readonly tags = new TagTable();
  private rpc: RpcAttachment | null = null;
  private repairer: Repairer | null = null;
  private figuresTimer: NodeJS.Timeout | null = null;
  private deferredTimer: NodeJS.Timeout | null = null;
  /** The fast path: clients read this directory and pin in their own pages, without requests. */
  readonly directory: FastDirectory;
  readonly pins: PinBoard;
  /** Clients' put rings: small puts arrive through shared memory, drained before every request. */
  readonly rings: PutRings;
  private readonly server: Server;
  private readonly connections = new Map<number, Connection>();
  private readonly tokens = new Map<string, Connection>();
  private nextConn = 1;
  private readonly startedAt = Date.now();
  private closing: Promise<void> | null = null;
  /** Counted in stores-in-thread.ts (from listen to the end of close). */
  private servesThread = false;
  private readonly spill: SpillDir | null;
  readonly log: Logger;
  /** Gets and puts by transport and kind, and the request timer of the metrics (store-metrics.ts). */
  readonly traffic = new StoreTraffic();
  readonly maxFrame: number;
  /** Request buffering shared by every connection, IPC and RPC. */
  readonly inputBudget: InputBudget;

  private constructor(
    readonly opts: StoreOptions,
    readonly meta: MetaService,
    readonly instanceId: number,
    readonly storeId: string,
    spill: SpillDir | null,
  ) {
    this.log = opts.logger ?? silentLogger;
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.inputBudget = new InputBudget(
      opts.maxBuffered ?? DEFAULT_MAX_BUFFERED,
      opts.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS,
    );
    const segmentSize = Math.min(opts.segmentSize ?? Math.min(opts.size, 1024 ** 3), MAX_SEGMENT_SIZE);
    this.arena = new Arena({
      limit: opts.size,
      segmentSize,
      reserve: opts.reserve ?? false,
      hugePages: opts.hugePages ?? false,
      punchDelayMs: opts.punchDelayMs ?? 1000,
      label: `trellis:${opts.name ?? 'store'}`,
    });
    this.spill = spill;
    this.ids = new IdAllocator(instanceId, spill);
    const label = `trellis:${opts.name ?? 'store'}`;
    this.directory = new FastDirectory(label);
    this.pins = new PinBoard(label);
    this.table = new ObjectTable(this.arena, this.ids, this.spill, opts.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES, {
      directory: this.directory,
      pins: this.pins,
    });
    this.cluster = new Cluster(meta, this.table, this.ids, instanceId);
    this.rings = new PutRings(label, this.table, this.arena, this.ids, opts.size, {
      put: (e, bytes) => this.traffic.put('ipc', e.typename, bytes),
      fail: (conn, err) => {
        this.log.warn({ conn, code: err.code }, err.message);
        // An error to no request: the client learns why, then the connection goes (and its ring with it).
        this.connections.get(conn)?.fail(err);
      },
    });
    this.server = createServer((s) => this.accept(s));
  }

  /**
   * Starts a store and resolves once it accepts clients: registers with the
   * metadata service (which assigns the instance id), listens on the socket,
   * and serves RPC when a port is given.
   */
  static async start(opts: StoreOptions, rpcStarter?: RpcStarter): Promise<StoreServer> {
    validateOptions(opts);
    // Bad TLS files fail the start here, before the socket or the metadata service are touched.
    const tls = opts.tls === undefined ? undefined : loadTls(opts.tls, 'server');
    if (tls && opts.rpcPort === undefined) {
      throw new TrellisError('ERR_TLS_CONFIG', 'the TLS flags secure the RPC port: give --rpc-port too');
    }
    await clearStaleSocket(opts.socket);
    // First, so a directory another live store holds refuses the start before anything registers.
    const spill = opts.spillDir ? new SpillDir(opts.spillDir) : null;
    if (spill && spill.staleRemoved > 0) {
      opts.logger?.info(
        { spillDir: opts.spillDir, files: spill.staleRemoved },
        'removed spill files a previous run left behind',
      );
    }
    const meta = createMeta(opts);
    const storeId = randomUUID();
    let instanceId: number;
    try {
      instanceId = await meta.register({
        name: opts.name ?? '',
        hostname: hostname(),
        pid: process.pid,
        storeId,
        rpc: null,
        memoryUsed: 0,
        memoryLimit: opts.size,
        startedAt: Date.now(),
      });
    } catch (e) {
      await meta.close();
      spill?.close();
      throw e;
    }
    const store = new StoreServer(opts, meta, instanceId, storeId, spill);
    try {
      await store.listen();
      if (opts.rpcPort !== undefined) {
        if (!opts.token) throw new TrellisError('ERR_BAD_REQUEST', 'RPC needs a token (--token-file or TRELLIS_TOKEN)');
        if (!rpcStarter) throw new TrellisError('ERR_UNSUPPORTED', 'no RPC server was linked into this store');
        store.rpc = await rpcStarter(store, {
          host: opts.rpcHost ?? '127.0.0.1',
          port: opts.rpcPort,
          token: opts.token,
          ...(tls ? { tls } : {}),
        });
        await meta.updateInstance({ rpc: store.rpc.address() });
      }
    } catch (e) {
      await store.close();
      throw e;
    }
    meta.onReregistered = () => {
      store.cluster
        .republish()
        .catch((e) =>
          store.log.warn({ code: (e as TrellisError).code }, `publishing again failed: ${(e as Error).message}`),
        );
    };
    // Repair needs other stores to copy from and to: a cluster backend and RPC.
    if (meta.kind === 'etcd' && store.cluster.migration) {
      store.repairer = new Repairer(meta, store.cluster.replication, store.table, instanceId, {
        rateBytesPerSec: opts.repairRate,
        intervalMs: opts.repairIntervalMs,
        logger: store.log.child({ component: 'repair' }),
      });
      store.repairer.start();
    }
    store.figuresTimer = setInterval(() => store.publishFigures(), 2000);
    store.figuresTimer.unref();
    // Backstop for deletes that waited on a fast pin: a client that lets go
    // says so (`unpinned`), but one may die between the two steps.
    store.deferredTimer = setInterval(() => store.table.recheckDeferred(), 100);
    store.deferredTimer.unref();
    return store;
  }

  /** The RPC endpoint, when serving one. */
  get rpcAddress(): RpcEndpoint | null {
    return this.rpc?.address() ?? null;
  }

  private lastFigures = '';
  private publishFigures(): void {
    const figures = { memoryUsed: this.arena.memoryUsed - this.rings.leasedBytes, memoryLimit: this.opts.size };
    const key = JSON.stringify(figures);
    if (key === this.lastFigures) return;
    this.lastFigures = key;
    this.meta.updateInstance(figures).catch(() => {
      this.lastFigures = '';
    });
  }

  /** A fresh connection id, for connections that do not come through the socket (RPC). */
  newConnectionId(): number {
    return this.nextConn++;
  }

  get socketPath(): string {
    return this.opts.socket;
  }

  private listen(): Promise<void> {
    // From now on a client of this thread must not block it for a handshake.
    storeServing();
    this.servesThread = true;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) =>
        reject(new TrellisError('ERR_NATIVE', `cannot listen on ${this.opts.socket}: ${e.message}`));
      this.server.once('error', onError);
      // The socket is created with the umask in force; narrow it so the file is
      // never reachable by others, then set the mode asked for.
      const old = process.umask(0o177);
      try {
        this.server.listen(this.opts.socket, () => {
          this.server.off('error', onError);
          try {
            chmodSync(this.opts.socket, this.opts.socketMode ?? 0o600);
            if (this.opts.socketGid !== undefined)
              chownSync(this.opts.socket, process.getuid?.() ?? 0, this.opts.socketGid);
          } catch (e) {
            reject(e);
            return;
          }
          resolve();
        });
      } finally {
        process.umask(old);
      }
    });
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new Connection(this.nextConn++, socket, this, this.maxFrame, this.inputBudget, this.log);
    this.connections.set(conn.id, conn);
  }

  // ---- RequestHandler ---------------------------------------------------

  hello(conn: Connection, req: Extract<Request, { t: 'hello' }>): { fields: object; fds: number[] } {
    const token = randomBytes(16).toString('hex');
    this.tokens.set(token, conn);
    conn.setToken(token);
    const fields: ReplyOf<'hello'> = {
      version: PROTOCOL_VERSION,
      instanceId: this.instanceId,
      storeId: this.storeId,
      name: this.opts.name ?? '',
      token,
      maxFrame: this.maxFrame,
      inlineLimit: Math.min(INLINE_LIMIT, this.maxFrame - 64 * 1024),
      session: conn.id,
      segments: this.arena.segments.length,
    };
    if (!req.attach || socketFd(conn.socket) === null) return { fields, fds: [] };
    // What a fresh reader needs before its first get, so it takes no other round trip.
    const live = this.arena.segments.filter((s) => !s.released).slice(0, ATTACH_SEGMENTS);
    const { reply, fds } = this.fdsOf(conn, live, true);
    fields.attached = reply;
    return { fields, fds };
  }

  fds(conn: Connection, req: Extract<Request, { t: 'fds' }>): void {
    const owner = this.tokens.get(req.token);
    if (owner?.state !== 'ready') throw new TrellisError('ERR_UNAUTHORIZED', 'unknown session token');
    const segs = req.segments.flatMap((id) => {
      const s = this.arena.segment(id);
      if (!s) throw new TrellisError('ERR_BAD_REQUEST', `no segment ${id}`);
      // Released: nothing lives there, so there is nothing to map (the client maps what it gets).
      return s.released ? [] : [s];
    });
    const { reply, fds } = this.fdsOf(owner, segs, req.fastpath === true, req.ring === true);
    const frame = encodeFrame(okReply<'fds'>(req.rid, reply));
    const fd = socketFd(conn.socket);
    if (fd === null) throw new TrellisError('ERR_INTERNAL', 'fd channel has no file descriptor');
    native.sendFds(fd, frame, fds);
    conn.socket.end();
  }

  /** The fds of `segs` (and of the fast path: the directory and `owner`'s pin page; of `owner`'s put ring), described. */
  private fdsOf(
    owner: Connection,
    segs: Segment[],
    fastpath: boolean,
    ring = false,
  ): { reply: FdsReply; fds: number[] } {
    const fds = segs.map((s) => s.fd);
    const reply: FdsReply = { segments: segs.map((s) => s.info()) };
    if (fastpath) {
      // The pin page belongs to the session's request connection, and goes with it.
      fds.push(this.directory.fd, this.pins.pageFd(owner.id));
      reply.fastpath = { directory: this.directory.size, pins: PIN_BYTES };
    }
    if (ring && this.opts.putRing !== false) {
      // The ring belongs to the session's request connection, and goes with it.
      fds.push(this.rings.ringFd(owner.id));
      reply.ring = RING_BYTES;
    }
    return { reply, fds };
  }

  closed(conn: Connection): void {
    if (!this.connections.delete(conn.id)) return;
    if (conn.token) this.tokens.delete(conn.token);
    this.connectionClosed(conn.id);
  }

  /** Everything a connection held goes: pins, unsealed blobs, name waits. */
  connectionClosed(connId: number): void {
    this.rings.drop(connId);
    this.meta.cancelWaiters(connId, new TrellisError('ERR_DISCONNECTED', 'connection closed'));
    this.tags.cancelWaiters(connId, new TrellisError('ERR_DISCONNECTED', 'connection closed'));
    this.table.dropConnection(connId);
    // Tagged objects die with the connection that made them (a crashed rank leaves nothing).
    this.deleteQuietly(this.tags.ownerClosed(connId));
  }

  /**
   * One complete RPC read of a tagged object: the object goes when that was
   * the last read its tag allowed.
   */
  consumeTag(tag: string, id: string): void {
    const done = this.tags.consumed(tag, id);
    if (done !== undefined) this.deleteQuietly([done]);
  }

  /** Deletes objects the store itself retires; one already gone (or in use by another object) is left. */
  private deleteQuietly(ids: string[]): void {
    for (const id of ids) {
      if (!this.table.has(id)) continue;
      try {
        const out = this.deleteObjects([id], true);
        if (out instanceof Promise)
          out.catch((e) => this.log.warn({ id, err: (e as Error).message }, 'deleting a retired object failed'));
      } catch (e) {
        this.log.warn({ id, err: (e as Error).message }, 'deleting a retired object failed');
      }
    }
  }

  handle(conn: Connection, req: Request, payload: Buffer, noReply = false): object | Promise<object> {
    // Fire-and-forget requests (the releases a client batches, 100 after a getMany of 100) are not
    // timed: nobody waits for them, and an observe (~1 µs) would cost more than the release.
    if (noReply) return this.execute(conn.id, req, payload, 'ipc');
    // The store's service time: from the decoded request to its answer (sync) or its settling (async).
    return timed(startTimer(this.traffic, req.t, 'ipc'), () => this.execute(conn.id, req, payload, 'ipc'));
  }

  /**
   * Runs one validated request for a connection (IPC or RPC). Local work
   * answers synchronously; what needs the metadata service returns a promise.
   */
  execute(connId: number, req: Request, payload: Buffer, transport: Transport): object | Promise<object> {
    if (this.closing) throw new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down');
    // What any client put by ring before this request is in before it is served.
    this.rings.drainAll();
    const t = this.table;
    switch (req.t) {
      case 'create': {
        const e = t.createBlob(req.size, connId);
        return { id: e.id, blob: e.loc };
      }
      case 'seal': {
        const tag = req.tag;
        const seal = () => {
          const bytes = t.lookup(req.id).nbytes;
          return this.counted(transport, t.seal(req.id, connId, req.object), bytes);
        };
        if (tag === undefined) return this.created(seal, req.name, req.persist);
        // Checked before the seal, so a taken tag leaves the blob unsealed (the writer may retry or abort).
        this.tags.checkBind(tag, connId);
        const make = () => {
          const e = seal();
          this.tags.bind(tag, e.id, connId, req.reads ?? 0);
          return e;
        };
        return this.created(make, req.name, req.persist);
      }
      case 'abort':
        t.abort(req.id, connId);
        return {};
      case 'put':
        return this.created(
          () => this.counted(transport, t.putInline(req.object, payload), payload.byteLength),
          req.name,
          req.persist,
        );
      case 'make':
        return this.created(() => this.counted(transport, t.make(req.object), 0), req.name, req.persist);
      case 'get':
        try {
          const objects = t.get(req.ids, connId);
          this.traffic.got(transport, objects);
          return { objects };
        } catch (e) {
          return this.explainMissing(e, req.ids);
        }
      case 'release':
        t.release(req.ids, connId);
        return {};
      case 'unpinned':
        t.recheckDeferred();
        return {};
      case 'delete':
        return this.deleteObjects(req.ids, req.deep);
      case 'putName':
        return this.cluster.putName(req.name, req.id, req.overwrite).then(() => ({}));
      case 'getName':
        return this.meta.getName(req.name).then((id) => {
          if (id !== undefined) return { id };
          if (!req.wait) throw new TrellisError('ERR_NAME_NOT_FOUND', `no object is named ${JSON.stringify(req.name)}`);
          return this.meta.waitName(req.name, req.timeoutMs, connId).then((found) => ({ id: found }));
        });
      case 'dropName':
        return this.cluster.dropName(req.name).then((id) => ({ id }));
      case 'listNames':
        return this.meta.listNames(req.prefix).then((names) => ({ names }));
      case 'list':
        return t.list(req.typename, req.limit, req.cursor);
      case 'status':
        return { status: this.status() };
      case 'persist':
        return this.cluster.persist(req.ids, req.replicas).then(() => ({}));
      case 'replicate':
        return this.cluster.replication.copyHere(req.id, req.from);
      case 'migrate':
        return this.cluster.migrate(req.id).then((id) => ({ id }));
      case 'instances':
        return this.meta.instances().then((instances) => ({ instances }));
      case 'listGlobal':
        return this.cluster
          .listGlobal({ typename: req.typename, instanceId: req.instanceId, limit: req.limit })
          .then((objects) => ({ objects }));
      case 'createDataset':
        return this.cluster.createDataset(req.name, req.members, req.meta, req.replicas).then((id) => ({ id }));
      case 'locate':
        return this.cluster.locate({ id: req.id, name: req.name }).then((locations) => ({ locations }));
      case 'lease':
        return this.rings.lease(connId);
      case 'ring':
        this.rings.wake(connId);
        return {};
      case 'endScope':
        this.deleteQuietly(this.tags.endScope(req.scope, connId));
        return {};
      case 'claimScope':
        this.tags.claim(req.scope, connId);
        return {};
      default:
        throw new TrellisError('ERR_PROTOCOL', `unexpected request ${(req as Request).t}`);
    }
  }

  /** Counts a client's new object (the blob bytes it brought) in the traffic figures. */
  private counted(transport: Transport, e: Entry, bytes: number): Entry {
    this.traffic.put(transport, e.typename, bytes);
    return e;
  }

  /**
   * Creates an object and, when asked, names and persists it — one request.
   * The name is checked before anything is created, so a taken name leaves
   * nothing behind.
   */
  private created(make: () => Entry, name: string | undefined, persist: boolean): object | Promise<object> {
    if (name === undefined && !persist) return { id: make().id };
    const checked = name === undefined ? Promise.resolve() : this.cluster.checkNameFree(name);
    return checked.then(async () => {
      const e = make();
      if (persist) await this.cluster.persist([e.id]);
      if (name !== undefined) await this.cluster.putName(name, e.id, false);
      return { id: e.id };
    });
  }

  private explainMissing(e: unknown, ids: string[]): Promise<object> {
    if (!(e instanceof TrellisError) || e.code !== 'ERR_OBJECT_NOT_FOUND') return Promise.reject(e);
    const missing = ids.find((id) => !this.table.has(id));
    if (missing === undefined) return Promise.reject(e);
    return this.cluster.whyMissing(missing).then((err) => Promise.reject(err));
  }

  private deleteObjects(ids: string[], deep: boolean): object | Promise<object> {
    const local = ids.filter((id) => this.table.has(id));
    const global = ids.filter((id) => !this.table.has(id));
    const deleted = local.length > 0 ? this.table.delete(local, deep) : [];
    if (this.tags.size > 0) this.tags.forget(deleted.map((e) => e.id));
    const persisted = deleted.some((e) => e.persisted);
    if (!persisted && global.length === 0) return {};
    return (async () => {
      await this.cluster.unpublish(deleted);
      if (global.length > 0) await this.cluster.deleteGlobal(global);
      return {};
    })();
  }

  status(): StoreStatus {
    const meta = this.meta.describe();
    const c = this.table.counters;
    let clients = 0;
    for (const conn of this.connections.values()) if (conn.state === 'ready') clients++;
    return {
      instanceId: this.instanceId,
      storeId: this.storeId,
      name: this.opts.name ?? '',
      hostname: hostname(),
      pid: process.pid,
      socket: this.opts.socket,
      protocolVersion: PROTOCOL_VERSION,
      // Object bytes: slab bytes leased to put rings and not yet holding objects are counters.ringLeased
      // (they count against memoryLimit all the same).
      memoryUsed: this.arena.memoryUsed - this.rings.leasedBytes,
      memoryLimit: this.opts.size,
      memoryMapped: this.arena.mappedBytes(),
      memoryResident: this.arena.residentBytes(),
      reserved: this.opts.reserve ?? false,
      segments: this.arena.liveSegments().map((s) => ({
        id: s.id,
        size: s.size,
        used: s.allocator.usedBytes,
        freeBlocks: s.allocator.freeBlockCount(),
        hugePages: s.hugePages,
      })),
      fragmentation: this.arena.fragmentation(),
      largestBlock: this.arena.largestAllocatable(),
      objects: this.table.objectCount,
      blobs: this.table.blobCount,
      entries: this.table.size,
      names: Number(meta.names ?? 0),
      connections: clients,
      nameWaiters: Number(meta.nameWaiters ?? 0),
      tags: this.tags.size,
      tagWaiters: this.tags.waiting,
      spill: { dir: this.opts.spillDir ?? null, objects: this.table.spilledCount, bytes: this.table.spilledBytes },
      records: { bytes: this.table.recordsUsed, limit: this.table.recordsLimit },
      counters: {
        ...c,
        fastGets: this.pins.fastGets,
        fastDeferred: this.table.deferredCount,
        ringPuts: this.rings.puts,
        ringLeased: this.rings.leasedBytes,
      },
      repair: this.repairStatus(),
      meta,
      rpc: this.rpc ? { ...this.rpc.address(), ...(this.rpc.describe?.() ?? {}) } : null,
      uptimeMs: Date.now() - this.startedAt,
    };
  }

  /** Replication and repair as this store sees them (status.repair; the metrics read it too). */
  repairStatus(): RepairStatus {
    return this.repairer?.status() ?? noRepairStatus(this.cluster.replication.copiesHere);
  }

  /** Stops accepting, drops every connection, frees the arena and removes the socket. Safe to call twice. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.figuresTimer) clearInterval(this.figuresTimer);
    this.repairer?.close();
    if (this.deferredTimer) clearInterval(this.deferredTimer);
    this.closing = new Promise<void>((resolve) => {
      this.meta.cancelWaiters(null, new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down'));
      this.tags.cancelWaiters(null, new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down'));
      this.server.close(() => resolve());
      for (const conn of this.connections.values()) {
        conn.socket.destroy();
        conn.destroy();
      }
    }).then(async () => {
      await this.rpc?.close().catch(() => {});
      // Deregister: with etcd the lease is revoked, so others see this store gone at once.
      await this.meta.close().catch(() => {});
      this.arena.close();
      this.rings.close();
      this.pins.close();
      this.directory.close();
      // The store's objects die with it, so do their spill files.
      this.spill?.close();
      try {
        unlinkSync(this.opts.socket);
      } catch {
        // already removed
      }
      if (this.servesThread) storeStopped();
      this.servesThread = false;
      this.log.info('store closed');
    });
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function validateOptions(o: StoreOptions): void {
  if (typeof o.socket !== 'string' || o.socket.length === 0 || Buffer.byteLength(o.socket) > 107) {
    throw new TrellisError('ERR_BAD_REQUEST', `socket path must be 1 to 107 bytes, got ${JSON.stringify(o.socket)}`);
  }
  if (!Number.isSafeInteger(o.size) || o.size < 64 * 1024) {
    throw new TrellisError('ERR_BAD_REQUEST', `size must be an integer of at least 64 KiB, got ${o.size}`);
  }
  if (o.segmentSize !== undefined && (!Number.isSafeInteger(o.segmentSize) || o.segmentSize < 64 * 1024)) {
    throw new TrellisError('ERR_BAD_REQUEST', `segmentSize must be at least 64 KiB, got ${o.segmentSize}`);
  }
  if (o.maxBuffered !== undefined && (!Number.isSafeInteger(o.maxBuffered) || o.maxBuffered < 64 * 1024)) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `maxBuffered must be an integer of at least 64 KiB, got ${o.maxBuffered}`,
    );
  }
  if (o.maxRecordBytes !== undefined && (!Number.isSafeInteger(o.maxRecordBytes) || o.maxRecordBytes < 64 * 1024)) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `maxRecordBytes must be an integer of at least 64 KiB, got ${o.maxRecordBytes}`,
    );
  }
  if (o.frameTimeoutMs !== undefined && (!Number.isSafeInteger(o.frameTimeoutMs) || o.frameTimeoutMs < 1)) {
    throw new TrellisError('ERR_BAD_REQUEST', `frameTimeoutMs must be a positive integer, got ${o.frameTimeoutMs}`);
  }
  // Anyone who can connect reads and writes every object: owner only, or owner and one group, never others.
  if (o.socketMode !== undefined && o.socketMode !== 0o600 && o.socketMode !== 0o660) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `socketMode must be 0600 (owner) or 0660 (owner and --socket-group), got 0${(o.socketMode >>> 0).toString(8)}`,
    );
  }
  if (o.repairRate !== undefined && (!Number.isSafeInteger(o.repairRate) || o.repairRate < 1)) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `repairRate must be a positive number of bytes per second, got ${o.repairRate}`,
    );
  }
  if (o.repairIntervalMs !== undefined && (!Number.isSafeInteger(o.repairIntervalMs) || o.repairIntervalMs < 10)) {
    throw new TrellisError('ERR_BAD_REQUEST', `repairIntervalMs must be at least 10, got ${o.repairIntervalMs}`);
  }
  if (o.instanceId !== undefined && (!Number.isInteger(o.instanceId) || o.instanceId < 0 || o.instanceId > 0xffff)) {
    throw new TrellisError('ERR_BAD_REQUEST', `instanceId must be in [0, 65535], got ${o.instanceId}`);
  }
}

function createMeta(o: StoreOptions): MetaService {
  const spec = o.meta ?? 'local';
  if (spec === 'local') return new LocalMeta(o.instanceId ?? 0);
  const m = /^etcd:\/\/([^/\s]+:\d+)\/?$/.exec(spec);
  if (!m)
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `meta must be "local" or "etcd://HOST:PORT", got ${JSON.stringify(spec)}`,
    );
  const log = o.logger?.child({ component: 'etcd' });
  return new EtcdMeta({
    endpoint: m[1],
    prefix: o.metaPrefix,
    leaseTtl: o.leaseTtl,
    log: log && ((msg) => log.warn(msg)),
  });
}

/** Removes a socket file left by a dead store; refuses if a live store answers on it. */
async function clearStaleSocket(path: string): Promise<void> {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new TrellisError('ERR_BAD_REQUEST', `${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = netConnect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new TrellisError('ERR_OBJECT_EXISTS', `a store is already listening on ${path}`);
  unlinkSync(path);
}

export { BLOB_TYPENAME };
