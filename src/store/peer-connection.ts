/**
 * What both kinds of store connection (IPC, store/connection.ts; RPC,
 * store/rpc-connection.ts) do alike: the handshake clock, and how a
 * connection fails (an error frame, then close) and goes (once, with its
 * owner told).
 */
import type { Socket } from 'node:net';
import { TrellisError } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import type { FrameReader } from '../protocol/frame.js';
import type { InputBudget } from './input-budget.js';

/** A peer that has not completed its handshake by then is answered ERR_TIMEOUT and dropped. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export abstract class PeerConnection {
  state: 'new' | 'ready' | 'fds' | 'closed' = 'new';
  private handshakeTimer: NodeJS.Timeout | null = null;
  /** Bytes of this connection's unfinished frames counted in the shared budget. */
  private charged = 0;
  private framesSeen = 0;
  /** When the frame being received started (performance.now()), or -1 when none is. */
  private partialSince = -1;
  private frameTimer: NodeJS.Timeout | null = null;

  /** `log` carries the connection's id and transport on every line. */
  constructor(
    private readonly budget: InputBudget,
    protected readonly log: Logger,
  ) {}

  abstract readonly socket: Socket;

  /**
   * Whether bytes still queued for the socket may leave after the connection
   * is gone. IPC answers are copies, so yes; RPC get answers are arena views
   * whose pins go with the connection, so no: the socket is destroyed, not
   * ended, while any are queued.
   */
  protected abstract readonly queuedBytesOutlive: boolean;

  /** Writes an error answer (nothing when the socket is gone). */
  protected abstract sendError(err: TrellisError, rid: number): void;

  /** Stops taking input (the first step of failing and of going). */
  protected abstract stopInput(): void;

  /** Everything the connection held goes (called once). */
  protected abstract released(): void;

  /** Starts the handshake clock; the subclass calls it once its socket is set up. */
  protected armHandshake(): void {
    this.handshakeTimer = setTimeout(() => {
      if (this.state === 'new') this.fail(new TrellisError('ERR_TIMEOUT', 'no handshake within 10 s'));
    }, HANDSHAKE_TIMEOUT_MS);
    this.handshakeTimer.unref();
  }

  /** The handshake is over (done, or the connection became something else, e.g. an fd channel). */
  protected handshakeOver(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  /**
   * After each chunk read: counts what the reader buffers against the
   * store-wide budget (failing the connection whose growth breaks it, with
   * ERR_OUT_OF_MEMORY), and clocks a frame left unfinished. O(1); a timer is
   * armed only while a frame is partial, and not per chunk. False when the
   * connection failed.
   */
  protected afterInput(reader: FrameReader): boolean {
    const buffered = reader.bufferedBytes;
    const grew = buffered - this.charged;
    if (grew !== 0) {
      const b = this.budget;
      b.used += grew;
      this.charged = buffered;
      if (grew > 0 && b.used > b.limit) {
        this.fail(
          new TrellisError(
            'ERR_OUT_OF_MEMORY',
            `unfinished request frames of all connections would hold ${b.used} bytes, more than the store's ${b.limit} (maxBuffered)`,
          ),
        );
        return false;
      }
    }
    if (buffered === 0) {
      this.partialSince = -1;
      this.framesSeen = reader.framesRead;
      return true;
    }
    if (this.partialSince < 0 || reader.framesRead !== this.framesSeen) this.partialSince = performance.now();
    this.framesSeen = reader.framesRead;
    if (this.frameTimer === null) this.armFrameTimer(this.budget.frameTimeoutMs);
    return true;
  }

  private armFrameTimer(ms: number): void {
    this.frameTimer = setTimeout(() => {
      this.frameTimer = null;
      if (this.state === 'closed' || this.partialSince < 0) return;
      const left = this.partialSince + this.budget.frameTimeoutMs - performance.now();
      if (left > 0) this.armFrameTimer(left);
      else
        this.fail(
          new TrellisError(
            'ERR_TIMEOUT',
            `a frame was started and not finished within ${this.budget.frameTimeoutMs} ms`,
          ),
        );
    }, ms);
    this.frameTimer.unref();
  }

  /** Answers with an error and closes: the peer broke the protocol, or failed the handshake. */
  fail(err: TrellisError, rid = 0): void {
    if (this.state === 'closed') return;
    // The peer's doing (a bad frame, a wrong token, a stall): a warning with the code, no stack.
    this.log.warn({ code: err.code }, `connection dropped: ${err.message}`);
    this.stopInput();
    this.sendError(err, rid);
    if (this.queuedBytesOutlive || this.socket.writableLength === 0) {
      // Let the error reach the peer, then close.
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
    this.destroy();
  }

  /** Drops the peer: what it held is released. Safe to call twice. */
  destroy(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.handshakeOver();
    this.stopInput();
    this.budget.used -= this.charged;
    this.charged = 0;
    if (this.frameTimer) clearTimeout(this.frameTimer);
    this.frameTimer = null;
    const s = this.socket;
    if (!s.destroyed && (this.queuedBytesOutlive ? s.writableLength === 0 : !s.writableEnded)) s.destroy();
    this.released();
  }
}
