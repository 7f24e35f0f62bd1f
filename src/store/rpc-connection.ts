/**
 * One TCP peer of a store's RPC server: the token handshake, then requests.
 *
 * Data moves without staging copies. A put allocates its blobs in the arena
 * when its header arrives and the bytes that follow are copied from the
 * socket's chunks straight into them; a get answer is its header followed by
 * the arena's own views, written to the socket as they are, while the
 * objects stay pinned for this peer until the last byte has left.
 *
 * Nothing is half-made: blobs of a put are unsealed (owned by this peer's
 * connection id) until every byte has arrived, and a peer that goes away
 * mid-stream has them aborted with everything else it held.
 */
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { asTrellisError, TrellisError } from '../errors.js';
import { respond, sendError } from '../protocol/answer.js';
import { encodeFrame, type Frame, MAX_HELLO_FRAME } from '../protocol/frame.js';
import { errorReply, okReply, ridOf } from '../protocol/messages.js';
import type { ObjectRecord } from '../protocol/records.js';
import {
  BLOB_TYPENAME,
  decodeRpcRequest,
  RPC_VERSION,
  type RpcHelloReply,
  type RpcRequest,
} from '../protocol/rpc-messages.js';
import { type RawTarget, RpcReader } from '../protocol/rpc-reader.js';
import { adoptWithOnread } from './net-handle.js';
import type { Entry } from './object-table.js';
import { PeerConnection } from './peer-connection.js';
import { prefault, worthPrefault } from './prefault.js';
import type { StoreServer } from './store-server.js';
import { startTimer, timed } from './store-traffic.js';

/** Blob bytes go to the socket in slices this large: few syscalls, no copies. */
const WRITE_SLICE = 64 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);
const NO_TIMER = (): void => {};
/** Where reads land between blobs (frames are parsed from here). */
const SCRATCH = 64 * 1024;

/** What the connection needs of its server. */
export interface RpcHost {
  readonly store: StoreServer;
  authenticate(token: unknown): boolean;
  readonly counters: { requests: number; bytesIn: number; bytesOut: number; authFailures: number };
  /** A peer whose announced bytes stop coming for this long is dropped (its put's blobs hold arena memory). */
  readonly rawIdleMs: number;
  forget(conn: RpcConnection): void;
}

type Put = Extract<RpcRequest, { t: 'put' }>;
type Get = Extract<RpcRequest, { t: 'get' }>;
type Read = Extract<RpcRequest, { t: 'read' }>;

function skip(raw: number[] | null): RawTarget | null {
  return raw === null ? null : { parts: raw.map(() => null), done: () => {} };
}

export class RpcConnection extends PeerConnection {
  /** This peer's connection id in the object table (pins, unsealed blobs, name waits). */
  readonly id: number;
  readonly socket: Socket;
  protected readonly queuedBytesOutlive = false;
  private readonly reader = new RpcReader(MAX_HELLO_FRAME, {
    frame: (f, raw) => this.onFrame(f, raw),
    error: (e) => this.fail(e),
  });
  private readonly scratch = Buffer.allocUnsafe(SCRATCH);

  /** `accepted` comes from a server with pauseOnConnect: it has not read anything yet. */
  constructor(
    accepted: Socket,
    private readonly host: RpcHost,
  ) {
    const id = host.store.newConnectionId();
    super(
      host.store.inputBudget,
      host.store.log.child({ conn: id, transport: 'rpc', peer: `${accepted.remoteAddress}:${accepted.remotePort}` }),
    );
    this.id = id;
    // Put bytes are read straight into their arena blobs when net allows it (not under TLS: the
    // bytes are decrypted into node's buffers, and a TLSSocket's handle is not a plain TCP one).
    const direct =
      accepted instanceof TLSSocket
        ? null
        : adoptWithOnread(accepted, {
            buffer: () => this.reader.nextBuffer() ?? this.scratch,
            callback: (n, buf) => {
              if (buf === this.scratch) {
                this.reader.push(this.scratch.subarray(0, n), true);
                this.afterInput(this.reader);
              } else this.reader.landed(n);
              return true;
            },
          });
    if (direct) {
      this.socket = direct;
    } else {
      this.socket = accepted;
      accepted.on('data', (chunk: Buffer) => {
        this.reader.push(chunk);
        this.afterInput(this.reader);
      });
      accepted.resume();
    }
    const socket = this.socket;
    this.armHandshake();
    socket.setNoDelay(true);
    socket.on('timeout', () =>
      this.fail(new TrellisError('ERR_TIMEOUT', `announced bytes stopped arriving for ${host.rawIdleMs} ms`)),
    );
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.destroy());
  }

  private get store(): StoreServer {
    return this.host.store;
  }

  // ---- frames -------------------------------------------------------------

  private onFrame(f: Frame, raw: number[] | null): RawTarget | null {
    const target = this.dispatch(f, raw);
    if (!target) return null;
    // While announced bytes are due, a peer that goes quiet is dropped (and its blobs aborted).
    this.socket.setTimeout(this.host.rawIdleMs);
    return {
      parts: target.parts,
      done: () => {
        this.socket.setTimeout(0);
        target.done();
      },
    };
  }

  private dispatch(f: Frame, raw: number[] | null): RawTarget | null {
    if (this.state === 'closed') return skip(raw);
    const rid = ridOf(f.header);
    if (this.state === 'new') {
      this.handshake(f.header, rid, raw);
      return skip(raw);
    }
    let req: RpcRequest;
    try {
      req = decodeRpcRequest(f.header);
      if (req.t === 'hello') throw new TrellisError('ERR_PROTOCOL', 'hello is only valid as the first message');
      if (raw !== null && req.t !== 'put') throw new TrellisError('ERR_BAD_REQUEST', `${req.t} carries no raw bytes`);
    } catch (e) {
      sendError(this.sender, rid, e);
      return skip(raw);
    }
    this.host.counters.requests++;
    switch (req.t) {
      case 'put':
        return this.put(req);
      case 'get':
        this.get(req);
        return null;
      case 'read':
        this.read(req);
        return null;
      default:
        respond(this.sender, rid, () =>
          timed(startTimer(this.store.traffic, req.t, 'rpc'), () =>
            this.store.execute(this.id, req as Parameters<StoreServer['execute']>[1], EMPTY, 'rpc'),
          ),
        );
        return null;
    }
  }

  /** The first frame must be a hello with the right token; anything else is refused before any data. */
  private handshake(h: Record<string, unknown>, rid: number, raw: number[] | null): void {
    if (h.t !== 'hello' || !this.host.authenticate(h.token)) {
      this.host.counters.authFailures++;
      this.fail(new TrellisError('ERR_UNAUTHORIZED', 'wrong or missing token'), rid);
      return;
    }
    let req: RpcRequest;
    try {
      req = decodeRpcRequest(h);
      if (raw !== null) throw new TrellisError('ERR_PROTOCOL', 'hello carries no raw bytes');
    } catch (e) {
      this.fail(asTrellisError(e), rid);
      return;
    }
    if (req.t !== 'hello') return;
    if (req.version !== RPC_VERSION) {
      this.fail(
        new TrellisError(
          'ERR_PROTOCOL',
          `RPC protocol version ${req.version} is not supported; this store speaks ${RPC_VERSION}`,
        ),
        rid,
      );
      return;
    }
    this.handshakeOver();
    this.state = 'ready';
    this.reader.maxFrame = this.store.maxFrame;
    this.log.debug('peer connected');
    const o = this.store.opts;
    const hello: RpcHelloReply = {
      version: RPC_VERSION,
      instanceId: this.store.instanceId,
      storeId: this.store.storeId,
      name: o.name ?? '',
      maxFrame: this.store.maxFrame,
    };
    this.send({ t: 'ok', rid, ...hello });
  }

  // ---- put ----------------------------------------------------------------

  /** Allocates the announced blobs now; the bytes that follow land in them. */
  private put(req: Put): RawTarget {
    const t = this.store.table;
    const ids: string[] = [];
    // From the header to the answer: the bytes' transfer included, as the peer sees it.
    const done = startTimer(this.store.traffic, 'put', 'rpc') ?? NO_TIMER;
    try {
      // Members and shape are checked before any blob is allocated for the bytes to come.
      if (req.object.typename !== BLOB_TYPENAME) t.checkObject(req.object, req.raw.length);
      const parts = req.raw.map((size) => {
        const e = t.createBlob(size, this.id);
        ids.push(e.id);
        return this.store.arena.view(e.loc!);
      });
      let receiving = true;
      // When asked for: a libuv thread takes the pages' faults (hypervisor faults on a VM) ahead of the socket.
      if (worthPrefault(this.store.opts, req.raw)) void prefault(parts, () => receiving && this.state !== 'closed');
      return {
        parts,
        done: () => {
          receiving = false;
          this.finishPut(req, ids, done);
        },
      };
    } catch (e) {
      this.discard(ids);
      // Answered now; the bytes still coming are skipped so the stream stays in step.
      sendError(this.sender, req.rid, e);
      done();
      return skip(req.raw)!;
    }
  }

  /**
   * Every byte is in: seal the blobs and record the object; with a name or
   * persist, as IPC does it (name checked first, then persisted, then bound).
   */
  private finishPut(req: Put, ids: string[], done: () => void): void {
    if (this.state === 'closed') return;
    let bytes = 0;
    for (const n of req.raw) bytes += n;
    this.host.counters.bytesIn += bytes;
    const make = (): Entry => {
      const t = this.store.table;
      // A Blob put is the blob itself, with the put's metadata.
      let e: Entry;
      if (req.object.typename === BLOB_TYPENAME) e = t.sealBlob(ids[0], this.id, req.object.meta);
      else {
        for (const id of ids) t.seal(id, this.id);
        e = t.makeObject({ ...req.object, members: [...ids, ...req.object.members] });
      }
      this.store.traffic.put('rpc', e.typename, bytes);
      return e;
    };
    if (req.name === undefined && !req.persist) {
      try {
        this.send(okReply<'put'>(req.rid, { id: make().id }));
      } catch (e) {
        this.discard(ids);
        sendError(this.sender, req.rid, e);
      }
      done();
      return;
    }
    const cluster = this.store.cluster;
    let root: string | null = null;
    (async () => {
      if (req.name !== undefined) await cluster.checkNameFree(req.name);
      root = make().id;
      if (req.persist) await cluster.persist([root]);
      if (req.name !== undefined) await cluster.putName(req.name, root, false);
      return root;
    })().then(
      (id) => {
        this.send(okReply<'put'>(req.rid, { id }));
        done();
      },
      (e) => {
        if (root === null) this.discard(ids);
        else this.deleteRoot(root);
        sendError(this.sender, req.rid, e);
        done();
      },
    );
  }

  /** Deletes an object made by a put whose naming or persisting failed (unpublishing it too). */
  private deleteRoot(id: string): void {
    try {
      const out = this.store.execute(this.id, { t: 'delete', rid: 0, ids: [id], deep: true }, EMPTY, 'rpc');
      if (out instanceof Promise) out.catch(() => {});
    } catch {
      // already gone
    }
  }

  /** Undoes a put that did not finish: unsealed blobs aborted, sealed ones nothing uses deleted. */
  private discard(ids: string[]): void {
    const t = this.store.table;
    for (const id of ids) {
      if (!t.has(id)) continue;
      try {
        const e = t.lookup(id);
        if (!e.sealed) t.abort(id, this.id);
        else if (e.parents === 0) t.delete([id], true);
      } catch {
        // already gone
      }
    }
  }

  // ---- get ----------------------------------------------------------------

  private get(req: Get): void {
    // From the request to the last byte handed to the socket, as the peer sees it.
    const done = startTimer(this.store.traffic, 'get', 'rpc') ?? NO_TIMER;
    const failed = (e: unknown) => {
      sendError(this.sender, req.rid, e);
      done();
    };
    // A replicated object this store holds a copy of is read from that copy, under the id asked for.
    const replication = this.store.cluster.replication;
    const ids = req.ids.map((id) => replication.localCopy(id) ?? id);
    let out: object | Promise<object>;
    try {
      out = this.store.execute(this.id, { t: 'get', rid: req.rid, ids }, EMPTY, 'rpc');
    } catch (e) {
      failed(e);
      return;
    }
    if (out instanceof Promise) {
      out.then((r) => this.sendObjects(req, ids, r, done), failed);
    } else {
      this.sendObjects(req, ids, out, done);
    }
  }

  /** The answer header, then every blob's bytes straight from the arena; the pins go when the last byte has. */
  private sendObjects(req: Get, pinned: string[], fields: object, done: () => void): void {
    const release = () => {
      done();
      try {
        this.store.table.release(pinned, this.id);
      } catch {
        // the connection closed and its pins went with it
      }
    };
    if (this.state === 'closed' || this.socket.destroyed) {
      release();
      return;
    }
    const records = (fields as { objects: ObjectRecord[] }).objects;
    const blobs: string[] = [];
    const raw: number[] = [];
    const views: Uint8Array[] = [];
    const seen = new Set<string>();
    const strip = (r: ObjectRecord): ObjectRecord => {
      if (r.typename === BLOB_TYPENAME) {
        if (!r.blob) throw new TrellisError('ERR_INTERNAL', `blob ${r.id} has no memory to send from`);
        if (!seen.has(r.id)) {
          seen.add(r.id);
          blobs.push(r.id);
          raw.push(r.blob.size);
          views.push(this.store.arena.view(r.blob));
        }
      }
      return { id: r.id, typename: r.typename, nbytes: r.nbytes, meta: r.meta, members: r.members.map(strip) };
    };
    let head: Buffer;
    try {
      const objects = records.map((r, i) => ({ ...strip(r), id: req.ids[i] }));
      // A Blob read from a replica goes under the id asked for in the list of blobs that follow, too.
      records.forEach((r, i) => {
        if (r.typename === BLOB_TYPENAME && r.id !== req.ids[i]) blobs[blobs.indexOf(r.id)] = req.ids[i];
      });
      head = encodeFrame({ t: 'ok', rid: req.rid, objects, blobs, raw });
    } catch (e) {
      release();
      sendError(this.sender, req.rid, e);
      return;
    }
    this.stream(head, views, release);
  }

  /**
   * Writes an answer header and then `views` (arena memory, as it is);
   * `sent(ok)` runs once the last byte has left, or the write failed.
   */
  private stream(head: Buffer, views: Uint8Array[], sent: (ok: boolean) => void): void {
    let total = 0;
    for (const v of views) total += v.length;
    const done = (err?: Error | null) => {
      if (!err) this.host.counters.bytesOut += total;
      sent(!err);
    };
    if (total === 0) {
      this.socket.write(head, done);
      return;
    }
    this.socket.write(head);
    const slices: Uint8Array[] = [];
    for (const v of views) {
      for (let off = 0; off < v.length; off += WRITE_SLICE) slices.push(v.subarray(off, off + WRITE_SLICE));
    }
    slices.forEach((s, i) => {
      this.socket.write(s, i === slices.length - 1 ? done : undefined);
    });
  }

  // ---- read ---------------------------------------------------------------

  /** A byte range of a tagged object's blob; with wait, answered when the tag is bound. */
  private read(req: Read): void {
    const id = this.store.tags.get(req.tag);
    if (id !== undefined) {
      this.sendRange(req, id);
      return;
    }
    if (!req.wait) {
      sendError(this.sender, req.rid, new TrellisError('ERR_NAME_NOT_FOUND', `no object is tagged ${req.tag}`));
      return;
    }
    this.store.tags.wait(req.tag, req.timeoutMs, this.id).then(
      (found) => this.sendRange(req, found),
      (e) => sendError(this.sender, req.rid, e),
    );
  }

  /** Pins the object, sends the range straight from the arena, unpins; a completed read counts against its tag. */
  private sendRange(req: Read, id: string): void {
    if (this.state === 'closed' || this.socket.destroyed) return;
    const t = this.store.table;
    let view: Uint8Array;
    let nbytes: number;
    try {
      const [rec] = t.get([id], this.id);
      try {
        const blob = rec.typename === BLOB_TYPENAME ? rec : rec.members.length === 1 ? rec.members[0] : null;
        if (blob?.typename !== BLOB_TYPENAME || !blob.blob) {
          throw new TrellisError('ERR_BAD_REQUEST', `${id} is a ${rec.typename}; read takes an object of one blob`);
        }
        nbytes = blob.blob.size;
        const length = req.length ?? nbytes - req.offset;
        if (req.offset > nbytes || length < 0 || req.offset + length > nbytes) {
          throw new TrellisError(
            'ERR_BAD_REQUEST',
            `bytes [${req.offset}, ${req.offset + (req.length ?? 0)}) are outside ${id}'s ${nbytes} bytes`,
          );
        }
        view = this.store.arena.view(blob.blob).subarray(req.offset, req.offset + length);
      } catch (e) {
        t.release([id], this.id);
        throw e;
      }
    } catch (e) {
      sendError(this.sender, req.rid, e);
      return;
    }
    const head = encodeFrame({ t: 'ok', rid: req.rid, id, nbytes, raw: [view.length] });
    this.stream(head, [view], (ok) => {
      try {
        t.release([id], this.id);
      } catch {
        // the connection closed and its pins went with it
      }
      if (ok) this.store.consumeTag(req.tag, id);
    });
  }

  // ---- answers and lifetime -------------------------------------------------

  private readonly sender = (h: object): void => this.send(h);

  private send(header: object): void {
    if (this.state === 'closed' || this.socket.destroyed) return;
    this.socket.write(encodeFrame(header));
  }

  protected sendError(err: TrellisError, rid: number): void {
    this.send(errorReply(rid, err));
  }

  protected stopInput(): void {
    this.reader.stop();
  }

  /** Pins released, unsealed blobs of unfinished puts aborted, waits cancelled. */
  protected released(): void {
    this.store.connectionClosed(this.id);
    this.host.forget(this);
  }
}
