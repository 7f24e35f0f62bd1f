/**
 * What both kinds of store connection (IPC, store/connection.ts; RPC,
 * store/rpc-connection.ts) do alike: the handshake clock, and how a
 * connection fails (an error frame, then close) and goes (once, with its
 * owner told).
 */
import type { Socket } from 'node:net';
import { TrellisError } from '../errors.js';

/** A peer that has not completed its handshake by then is answered ERR_TIMEOUT and dropped. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export abstract class PeerConnection {
  state: 'new' | 'ready' | 'fds' | 'closed' = 'new';
  private handshakeTimer: NodeJS.Timeout | null = null;

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

  /** Answers with an error and closes: the peer broke the protocol, or failed the handshake. */
  fail(err: TrellisError, rid = 0): void {
    if (this.state === 'closed') return;
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
    const s = this.socket;
    if (!s.destroyed && (this.queuedBytesOutlive ? s.writableLength === 0 : !s.writableEnded)) s.destroy();
    this.released();
  }
}
