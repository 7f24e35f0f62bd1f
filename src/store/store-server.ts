/**
 * The store daemon: owns the arena, the object table and the names, and
 * serves clients on a UNIX socket. Segment fds reach clients over the fd
 * channel (a second, short-lived connection on the same socket, see
 * docs/PROTOCOL.md), never over the request connection.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, existsSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { TrellisError } from '../errors.js';
import { MAX_SEGMENT_SIZE, native } from '../native.js';
import { DEFAULT_MAX_FRAME, encodeFrame } from '../protocol/frame.js';
import { PROTOCOL_VERSION, type Request } from '../protocol/messages.js';
import { Arena } from './arena.js';
import { Connection, type RequestHandler } from './connection.js';
import { IdAllocator } from './ids.js';
import { NameTable } from './names.js';
import { BLOB_TYPENAME, ObjectTable } from './object-table.js';
import { SpillDir } from './spill.js';

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
  /** Spill unreferenced sealed blobs here when memory runs out. */
  spillDir?: string;
  /** File mode of the socket (default 0o600). */
  socketMode?: number;
  /** Group (name resolved by the caller, or gid) that owns the socket. */
  socketGid?: number;
  /** Largest frame accepted (default 16 MiB). */
  maxFrame?: number;
  /** Instance id, the top 16 bits of every object id (default 0). */
  instanceId?: number;
  log?: (msg: string) => void;
}

export interface StoreStatus {
  instanceId: number;
  storeId: string;
  name: string;
  hostname: string;
  pid: number;
  socket: string;
  protocolVersion: number;
  memoryUsed: number;
  memoryLimit: number;
  memoryMapped: number;
  memoryResident: number;
  reserved: boolean;
  segments: { id: number; size: number; used: number; freeBlocks: number }[];
  fragmentation: number;
  objects: number;
  blobs: number;
  entries: number;
  names: number;
  connections: number;
  nameWaiters: number;
  spill: { dir: string | null; objects: number; bytes: number };
  counters: Record<string, number>;
  uptimeMs: number;
}

/** Bytes a put may carry inline; larger values go through create + seal. */
export const INLINE_LIMIT = 256 * 1024;

export class StoreServer implements RequestHandler {
  readonly storeId = randomUUID();
  readonly arena: Arena;
  readonly table: ObjectTable;
  readonly names = new NameTable();
  private readonly server: Server;
  private readonly connections = new Map<number, Connection>();
  private readonly tokens = new Map<string, Connection>();
  private nextConn = 1;
  private readonly startedAt = Date.now();
  private closing: Promise<void> | null = null;
  private readonly spill: SpillDir | null;
  private readonly log: (msg: string) => void;
  readonly maxFrame: number;

  private constructor(readonly opts: StoreOptions) {
    this.log = opts.log ?? (() => {});
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    const segmentSize = Math.min(opts.segmentSize ?? Math.min(opts.size, 1024 ** 3), MAX_SEGMENT_SIZE);
    this.arena = new Arena({
      limit: opts.size,
      segmentSize,
      reserve: opts.reserve ?? false,
      label: `trellis:${opts.name ?? 'store'}`,
    });
    this.spill = opts.spillDir ? new SpillDir(opts.spillDir) : null;
    this.table = new ObjectTable(this.arena, new IdAllocator(opts.instanceId ?? 0), this.spill);
    this.table.onNamesDropped = (names) => this.names.forget(names);
    this.server = createServer((s) => this.accept(s));
  }

  /** Starts a store and resolves once it accepts clients. */
  static async start(opts: StoreOptions): Promise<StoreServer> {
    validateOptions(opts);
    await clearStaleSocket(opts.socket);
    const store = new StoreServer(opts);
    await store.listen();
    return store;
  }

  get socketPath(): string {
    return this.opts.socket;
  }

  private listen(): Promise<void> {
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
    const conn = new Connection(this.nextConn++, socket, this, this.maxFrame);
    this.connections.set(conn.id, conn);
  }

  // ---- RequestHandler ---------------------------------------------------

  hello(conn: Connection): object {
    const token = randomBytes(16).toString('hex');
    this.tokens.set(token, conn);
    (conn as Connection & { token?: string }).token = token;
    return {
      version: PROTOCOL_VERSION,
      instanceId: this.opts.instanceId ?? 0,
      storeId: this.storeId,
      name: this.opts.name ?? '',
      token,
      maxFrame: this.maxFrame,
      inlineLimit: Math.min(INLINE_LIMIT, this.maxFrame - 64 * 1024),
      session: conn.id,
    };
  }

  fds(conn: Connection, req: Extract<Request, { t: 'fds' }>): void {
    const owner = this.tokens.get(req.token);
    if (owner?.state !== 'ready') throw new TrellisError('ERR_UNAUTHORIZED', 'unknown session token');
    const segs = req.segments.map((id) => {
      const s = this.arena.segment(id);
      if (!s) throw new TrellisError('ERR_BAD_REQUEST', `no segment ${id}`);
      return s;
    });
    const frame = encodeFrame({ t: 'ok', rid: req.rid, segments: segs.map((s) => s.info()) });
    const fd = (conn.socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new TrellisError('ERR_INTERNAL', 'fd channel has no file descriptor');
    native.sendFds(
      fd,
      frame,
      segs.map((s) => s.fd),
    );
    conn.socket.end();
  }

  closed(conn: Connection): void {
    if (!this.connections.delete(conn.id)) return;
    const token = (conn as Connection & { token?: string }).token;
    if (token) this.tokens.delete(token);
    this.names.cancelWaiters(conn.id, new TrellisError('ERR_DISCONNECTED', 'connection closed'));
    this.table.dropConnection(conn.id);
  }

  handle(conn: Connection, req: Request, payload: Buffer): object | Promise<object> {
    if (this.closing) throw new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down');
    const t = this.table;
    switch (req.t) {
      case 'create': {
        const e = t.createBlob(req.size, conn.id);
        return { id: e.id, blob: e.loc };
      }
      case 'seal': {
        if (req.name !== undefined) this.checkNameFree(req.name);
        const e = t.seal(req.id, conn.id, req.object);
        if (req.name !== undefined) this.bindName(req.name, e.id, false);
        return { id: e.id };
      }
      case 'abort':
        t.abort(req.id, conn.id);
        return {};
      case 'put': {
        if (req.name !== undefined) this.checkNameFree(req.name);
        const e = t.putInline(req.object, payload);
        if (req.name !== undefined) this.bindName(req.name, e.id, false);
        return { id: e.id };
      }
      case 'make': {
        if (req.name !== undefined) this.checkNameFree(req.name);
        const e = t.makeObject(req.object);
        if (req.name !== undefined) this.bindName(req.name, e.id, false);
        return { id: e.id };
      }
      case 'get':
        return { objects: t.get(req.ids, conn.id) };
      case 'release':
        t.release(req.ids, conn.id);
        return {};
      case 'delete':
        t.delete(req.ids, req.deep);
        return {};
      case 'putName':
        this.bindName(req.name, req.id, req.overwrite);
        return {};
      case 'getName': {
        const id = this.names.get(req.name);
        if (id !== undefined) return { id };
        if (!req.wait) throw new TrellisError('ERR_NAME_NOT_FOUND', `no object is named ${JSON.stringify(req.name)}`);
        return this.names.wait(req.name, req.timeoutMs, conn.id).then((found) => ({ id: found }));
      }
      case 'dropName': {
        const id = this.names.drop(req.name);
        t.detachName(id, req.name);
        return { id };
      }
      case 'listNames':
        return { names: this.names.list(req.prefix) };
      case 'list':
        return { objects: t.list(req.typename, req.limit) };
      case 'status':
        return { status: this.status() };
      default:
        throw new TrellisError('ERR_PROTOCOL', `unexpected request ${(req as Request).t}`);
    }
  }

  private checkNameFree(name: string): void {
    const prev = this.names.get(name);
    if (prev !== undefined)
      throw new TrellisError('ERR_OBJECT_EXISTS', `name ${JSON.stringify(name)} is bound to ${prev}`);
  }

  private bindName(name: string, id: string, overwrite: boolean): void {
    const e = this.table.lookup(id);
    if (!e.sealed) throw new TrellisError('ERR_NOT_SEALED', `${id} is not sealed`);
    const prev = this.names.put(name, id, overwrite);
    if (prev !== undefined && prev !== id) this.table.detachName(prev, name);
    this.table.attachName(e, name);
  }

  status(): StoreStatus {
    const c = this.table.counters;
    let clients = 0;
    for (const conn of this.connections.values()) if (conn.state === 'ready') clients++;
    return {
      instanceId: this.opts.instanceId ?? 0,
      storeId: this.storeId,
      name: this.opts.name ?? '',
      hostname: hostname(),
      pid: process.pid,
      socket: this.opts.socket,
      protocolVersion: PROTOCOL_VERSION,
      memoryUsed: this.arena.memoryUsed,
      memoryLimit: this.opts.size,
      memoryMapped: this.arena.mappedBytes(),
      memoryResident: this.arena.residentBytes(),
      reserved: this.opts.reserve ?? false,
      segments: this.arena.segments.map((s) => ({
        id: s.id,
        size: s.size,
        used: s.allocator.usedBytes,
        freeBlocks: s.allocator.freeBlockCount(),
      })),
      fragmentation: this.arena.fragmentation(),
      objects: this.table.objectCount,
      blobs: this.table.blobCount,
      entries: this.table.size,
      names: this.names.size,
      connections: clients,
      nameWaiters: this.names.waiting,
      spill: { dir: this.opts.spillDir ?? null, objects: this.table.spilledCount, bytes: this.table.spilledBytes },
      counters: { ...c },
      uptimeMs: Date.now() - this.startedAt,
    };
  }

  /** Stops accepting, drops every connection, frees the arena and removes the socket. Safe to call twice. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      this.names.cancelWaiters(null, new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down'));
      this.server.close(() => resolve());
      for (const conn of this.connections.values()) {
        conn.socket.destroy();
        conn.destroy();
      }
    }).then(() => {
      this.arena.close();
      if (this.opts.spillDir) {
        // The store's objects die with it, so do their spill files.
        for (const f of [...this.spillFiles()]) rmSync(f, { force: true });
      }
      try {
        unlinkSync(this.opts.socket);
      } catch {
        // already removed
      }
      this.log('store closed');
    });
    return this.closing;
  }

  private *spillFiles(): Generator<string> {
    const dir = this.opts.spillDir;
    if (!dir || !existsSync(dir)) return;
    for (const e of this.table.list(undefined, Number.MAX_SAFE_INTEGER)) {
      if (e.spilled) yield `${dir}/${e.id}.blob`;
    }
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
  if (o.instanceId !== undefined && (!Number.isInteger(o.instanceId) || o.instanceId < 0 || o.instanceId > 0xffff)) {
    throw new TrellisError('ERR_BAD_REQUEST', `instanceId must be in [0, 65535], got ${o.instanceId}`);
  }
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
