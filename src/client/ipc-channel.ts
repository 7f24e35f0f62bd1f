/**
 * The request connection of an IPC client: a UNIX socket carrying frames,
 * requests matched to answers by `rid`. Any number of requests may be in
 * flight; writes made in one tick leave in one syscall.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { TrellisError } from '../errors.js';
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
  private readonly out: WriteBatch;

  private constructor(
    private readonly socket: Socket,
    maxFrame: number,
  ) {
    this.decoder = new FrameDecoder(maxFrame);
    this.out = new WriteBatch(socket);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.fail(new TrellisError('ERR_DISCONNECTED', `store connection failed: ${e.message}`)));
    socket.on('close', () => this.fail(new TrellisError('ERR_DISCONNECTED', 'the store closed the connection')));
  }

  static open(path: string, timeoutMs: number): Promise<IpcChannel> {
    return new Promise((resolve, reject) => {
      const socket = netConnect(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new TrellisError('ERR_TIMEOUT', `could not connect to ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new IpcChannel(socket, 1 << 30));
      });
      socket.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new TrellisError('ERR_DISCONNECTED', `cannot connect to the store at ${path}: ${e.code ?? e.message}`));
      });
    });
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
      this.out.write(frame);
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
    this.socket.destroy();
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
