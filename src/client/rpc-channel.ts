/**
 * The client end of an RPC connection, used by RemoteClient and by a store
 * migrating from another: TCP, the token handshake, requests matched to
 * answers by `rid`, any number in flight.
 *
 * Receiving at wire speed. The socket reads through net's `onread` option
 * into buffers this channel picks: while raw bytes of an answer are due, the
 * read lands straight in their destination (a fresh buffer, or an arena blob
 * of the migrating store), so no byte is copied after the kernel's copy;
 * otherwise it lands in one reused scratch buffer and is parsed from there.
 * Sending raw bytes writes the caller's views as they are (no staging copy).
 *
 * Over TLS (the `tls` option) the channel verifies the store's certificate
 * against the given CA (its SAN must name the host dialled) and presents its
 * own when it has one. Decrypted bytes arrive in node's 'data' chunks, so
 * raw bytes are copied once from there to their destination; a failed
 * handshake or certificate check is ERR_TLS_HANDSHAKE.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { asTrellisError, TrellisError } from '../errors.js';
import type { Frame } from '../protocol/frame.js';
import { decodeError } from '../protocol/messages.js';
import {
  decodeRpcReply,
  encodeRpcRequest,
  RPC_VERSION,
  type RpcHelloReply,
  type RpcRequestBody,
} from '../protocol/rpc-messages.js';
import { type RawTarget, RpcReader } from '../protocol/rpc-reader.js';
import { clientTlsOptions, isTlsError, type TlsMaterial, tlsFailure } from '../tls-config.js';
import { WriteBatch } from './write-batch.js';

export interface RpcChannelOptions {
  host: string;
  port: number;
  token: string;
  /** Label for this client in the store's logs. */
  client?: string;
  /** Connect and handshake timeout (default 10 s). */
  timeoutMs?: number;
  /** Local address to connect from (e.g. the migrating store's own RPC host). */
  localAddress?: string;
  /** A request (other than a wait) that sees no byte for this long fails with ERR_TIMEOUT (default 60 s; 0: never). */
  idleTimeoutMs?: number;
  /** Speak TLS: trust `ca` (else the system's CAs) and present `cert` and `key` when given. */
  tls?: TlsMaterial;
}

export interface RpcAnswer {
  header: Record<string, unknown>;
  /** The raw parts that followed the answer, where `alloc` put them. */
  parts: Uint8Array[];
}

export interface RequestOptions {
  /** Bytes that follow the request frame (announced in its `raw` field). */
  raw?: Uint8Array[];
  /**
   * Where the raw parts of the answer go: one buffer per size. Called when the
   * answer header arrives; if it throws, the parts are skipped and the
   * request fails with what it threw.
   */
  alloc?: (header: Record<string, unknown>, sizes: number[]) => Uint8Array[];
  /** The answer may take long on purpose (getName with wait): no idle timeout. */
  waits?: boolean;
}

interface Pending {
  resolve: (a: RpcAnswer) => void;
  reject: (e: TrellisError) => void;
  alloc?: RequestOptions['alloc'];
  waits: boolean;
}

const SCRATCH = 256 * 1024;
/** Raw bytes go to the socket in slices this large. */
const WRITE_SLICE = 64 * 1024 * 1024;
/** Largest answer header accepted (an answer for 100 000 ids is big, but not this big). */
const MAX_ANSWER_FRAME = 1 << 30;

export class RpcChannel {
  private readonly pending = new Map<number, Pending>();
  /** The request whose answer's raw bytes are arriving now. */
  private receiving: Pending | null = null;
  private nextRid = 1;
  private readonly scratch = Buffer.allocUnsafe(SCRATCH);
  private readonly reader = new RpcReader(MAX_ANSWER_FRAME, {
    frame: (f, raw) => this.onFrame(f, raw),
    error: (e) => this.fail(e),
  });
  private readonly socket: Socket;
  private failure: TrellisError | null = null;
  /** Requests in flight that are not waits, and answers whose raw bytes are arriving: the idle timer runs while > 0. */
  private active = 0;
  private readonly out: WriteBatch;
  private readonly idleMs: number;
  /** 'secureConnect' under TLS: the handshake is done (and the store's certificate checked). */
  private readonly connectEvent: 'connect' | 'secureConnect';
  /** The store's hello answer (set once open resolves). */
  hello: RpcHelloReply = { version: 0, instanceId: 0, storeId: '', name: '', maxFrame: 0 };
  onClose: (err: TrellisError) => void = () => {};

  private constructor(
    readonly endpoint: string,
    opts: RpcChannelOptions,
  ) {
    this.idleMs = opts.idleTimeoutMs ?? 60_000;
    if (opts.tls) {
      // tls.connect has no `onread`: its chunks are fresh buffers the reader may keep.
      // The TCP socket is made here so localAddress applies; `host` is what the certificate must name.
      const tcp = netConnect({ host: opts.host, port: opts.port, localAddress: opts.localAddress });
      this.socket = tlsConnect({ socket: tcp, host: opts.host, ...clientTlsOptions(opts.tls) });
      this.socket.on('data', (chunk: Buffer) => this.reader.push(chunk));
    } else {
      this.socket = netConnect({
        host: opts.host,
        port: opts.port,
        localAddress: opts.localAddress,
        onread: {
          buffer: () => this.reader.nextBuffer() ?? this.scratch,
          callback: (n: number, buf: Uint8Array) => {
            if (buf === this.scratch) this.reader.push(this.scratch.subarray(0, n), true);
            else this.reader.landed(n);
            return true;
          },
        },
      });
    }
    this.connectEvent = opts.tls ? 'secureConnect' : 'connect';
    this.socket.setNoDelay(true);
    this.out = new WriteBatch(this.socket);
    this.socket.on('error', (e: NodeJS.ErrnoException) => {
      if (isTlsError(e)) {
        this.fail(tlsFailure(`the store at ${endpoint}`, e));
        return;
      }
      const what = this.socket.connecting ? 'cannot connect to the store at' : 'the connection to the store at';
      this.fail(new TrellisError('ERR_DISCONNECTED', `${what} ${endpoint} failed: ${e.code ?? e.message}`));
    });
    this.socket.on('timeout', () =>
      this.fail(new TrellisError('ERR_TIMEOUT', `no data from the store at ${endpoint} for ${this.idleMs} ms`)),
    );
    this.socket.on('close', () =>
      this.fail(new TrellisError('ERR_DISCONNECTED', `the store at ${endpoint} closed the connection`)),
    );
  }

  /** Connects and presents the token; ERR_UNAUTHORIZED if the store refuses it. */
  static async open(opts: RpcChannelOptions): Promise<RpcChannel> {
    const endpoint = `${opts.host}:${opts.port}`;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const ch = new RpcChannel(endpoint, opts);
    const timer = setTimeout(
      () => ch.fail(new TrellisError('ERR_TIMEOUT', `could not reach the store at ${endpoint} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      await new Promise<void>((resolve, reject) => {
        ch.socket.once(ch.connectEvent, resolve);
        ch.onClose = reject;
      });
      ch.onClose = () => {};
      const a = await ch.request({
        t: 'hello',
        version: RPC_VERSION,
        token: opts.token,
        client: opts.client ?? `pid ${process.pid}`,
      });
      const hello = decodeRpcReply('hello', a.header);
      if (hello.version !== RPC_VERSION) {
        throw new TrellisError('ERR_PROTOCOL', `the store at ${endpoint} speaks RPC version ${hello.version}`);
      }
      ch.hello = hello;
      return ch;
    } catch (e) {
      const err = asTrellisError(e);
      ch.fail(err);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Raw bytes received so far (answers' blob bytes). */
  get bytesReceived(): number {
    return this.reader.rawBytes;
  }

  /** Sends a request (and its raw parts); resolves with the answer, rejects with the store's error. */
  request(body: RpcRequestBody, opts: RequestOptions = {}): Promise<RpcAnswer> {
    if (this.failure) return Promise.reject(this.failure);
    const rid = this.nextRid;
    this.nextRid = rid >= 0xfffffffe ? 1 : rid + 1;
    let frame: Buffer;
    try {
      frame = encodeRpcRequest(rid, body, opts.raw);
    } catch (e) {
      return Promise.reject(
        new TrellisError('ERR_BAD_REQUEST', `the request cannot be encoded: ${(e as Error).message}`),
      );
    }
    const waits = opts.waits ?? false;
    return new Promise<RpcAnswer>((resolve, reject) => {
      this.pending.set(rid, { resolve, reject, alloc: opts.alloc, waits });
      if (!waits) this.setActive(1);
      this.out.write(frame);
      for (const p of opts.raw ?? []) {
        for (let off = 0; off < p.byteLength; off += WRITE_SLICE) {
          this.out.write(p.subarray(off, Math.min(p.byteLength, off + WRITE_SLICE)));
        }
      }
    });
  }

  /** Closes the connection; requests in flight fail with ERR_CLOSED. Safe to call twice. */
  close(): void {
    this.fail(new TrellisError('ERR_CLOSED', 'the client was closed'));
  }

  private setActive(delta: number): void {
    const before = this.active;
    this.active += delta;
    if (this.idleMs <= 0 || this.failure) return;
    if (before === 0 && this.active > 0) this.socket.setTimeout(this.idleMs);
    else if (before > 0 && this.active === 0) this.socket.setTimeout(0);
  }

  private onFrame(f: Frame, raw: number[] | null): RawTarget | null {
    const h = f.header;
    const skip = raw === null ? null : { parts: raw.map(() => null), done: () => {} };
    const p = typeof h.rid === 'number' ? this.pending.get(h.rid) : undefined;
    if (!p) {
      // An error for no request of ours (rid 0): the store gave up on this connection.
      if (h.t === 'err') {
        this.fail(decodeError(h));
        return skip;
      }
      throw new TrellisError('ERR_PROTOCOL', `the store answered request ${String(h.rid)}, which is not in flight`);
    }
    this.pending.delete(h.rid as number);
    if (!p.waits) this.setActive(-1);
    if (h.t === 'err') {
      p.reject(decodeError(h));
      return skip;
    }
    if (raw === null) {
      p.resolve({ header: h, parts: [] });
      return null;
    }
    let parts: Uint8Array[];
    try {
      if (!p.alloc) throw new TrellisError('ERR_PROTOCOL', 'the store sent raw bytes that nothing asked for');
      parts = p.alloc(h, raw);
    } catch (e) {
      p.reject(asTrellisError(e));
      return skip;
    }
    this.setActive(1);
    this.receiving = p;
    return {
      parts,
      done: () => {
        this.receiving = null;
        this.setActive(-1);
        p.resolve({ header: h, parts });
      },
    };
  }

  private fail(err: TrellisError): void {
    if (this.failure) return;
    this.failure = err;
    // The socket goes first: no read may land in a destination after its owner gave it up.
    this.socket.destroy();
    this.reader.stop();
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.receiving?.reject(err);
    this.receiving = null;
    this.onClose(err);
  }
}
