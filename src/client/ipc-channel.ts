/**
 * The request connection of an IPC client: a UNIX socket carrying frames,
 * requests matched to answers by `rid`. Any number of requests may be in
 * flight; writes made in one tick leave in one syscall.
 */
import { Socket } from 'node:net';
import { TrellisError } from '../errors.js';
import { native } from '../native.js';
import { type Frame, FrameDecoder } from '../protocol/frame.js';
import { decodeError, encodeRequest, type RequestBody } from '../protocol/messages.js';
import { WriteBatch } from './write-batch.js';

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: TrellisError) => void;
}

export class IpcChannel {
  private readonly pending = new Map<number, Pending>();
  private nextRid = 1;
  private readonly decoder: FrameDecoder;
  private failure: TrellisError | null = null;
  private socket: Socket | null = null;
  private out: WriteBatch | null = null;

  private constructor(
    private fd: number,
    maxFrame: number,
  ) {
    this.decoder = new FrameDecoder(maxFrame);
    // The first net.Socket of a process costs ~0.9 ms of cold code, and a
    // reader's first get needs no request: the socket is made on the first
    // request or the next turn of the event loop, whichever comes first.
    setImmediate(() => {
      if (this.failure) return;
      try {
        this.writer();
      } catch {
        // failed the channel: the next request says why
      }
    });
  }

  /**
   * The channel over a UNIX socket already connected and past its hello
   * (handshake.ts): libuv takes the descriptor over from here.
   */
  static adopt(fd: number): IpcChannel {
    return new IpcChannel(fd, 1 << 30);
  }

  /** The socket's write batch, the socket made first if it is not yet. */
  private writer(): WriteBatch {
    if (this.out) return this.out;
    if (this.failure) throw this.failure;
    let socket: Socket;
    try {
      socket = new Socket({ fd: this.fd, readable: true, writable: true });
    } catch (e) {
      this.fail(new TrellisError('ERR_DISCONNECTED', `the store connection cannot be used: ${(e as Error).message}`));
      throw this.failure;
    }
    this.fd = -1;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.fail(new TrellisError('ERR_DISCONNECTED', `store connection failed: ${e.message}`)));
    socket.on('close', () => this.fail(new TrellisError('ERR_DISCONNECTED', 'the store closed the connection')));
    this.socket = socket;
    this.out = new WriteBatch(socket);
    return this.out;
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Why the channel failed (null while it works). */
  get error(): TrellisError | null {
    return this.failure;
  }

  /**
   * Sends a request and resolves with the answer frame (its header still to
   * be checked by the reply's decoder); an error answer rejects with its
   * TrellisError. Without `expectAnswer` the store is asked not to answer and
   * the promise resolves with an empty frame once the request is queued.
   */
  request(body: RequestBody, payload?: Uint8Array, expectAnswer = true): Promise<Frame> {
    if (this.failure) return Promise.reject(this.failure);
    const rid = this.nextRid;
    this.nextRid = rid >= 0xfffffffe ? 1 : rid + 1;
    let frame: Buffer;
    try {
      frame = encodeRequest(rid, body, payload, !expectAnswer);
    } catch (e) {
      return Promise.reject(
        new TrellisError('ERR_BAD_REQUEST', `the request cannot be encoded: ${(e as Error).message}`),
      );
    }
    return new Promise<Frame>((resolve, reject) => {
      if (expectAnswer) this.pending.set(rid, { resolve, reject });
      else resolve({ header: {}, payload: Buffer.alloc(0) });
      this.writer().write(frame);
    });
  }

  close(): void {
    this.fail(new TrellisError('ERR_CLOSED', 'the client was closed'));
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.fail(e as TrellisError);
      return;
    }
    for (const f of frames) {
      const rid = f.header.rid as number;
      const p = this.pending.get(rid);
      if (!p) {
        // An error for rid 0 means the store gave up on this connection.
        if (f.header.t === 'err') this.fail(decodeError(f.header));
        continue;
      }
      this.pending.delete(rid);
      if (f.header.t === 'err') p.reject(decodeError(f.header));
      else p.resolve(f);
    }
  }

  private fail(err: TrellisError): void {
    if (this.failure) return;
    this.failure = err;
    if (this.socket) this.socket.destroy();
    else if (this.fd >= 0) native.closeFd(this.fd);
    this.fd = -1;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
