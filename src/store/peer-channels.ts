/**
 * RPC connections from this store to other stores, kept open between
 * requests: migration, replication and repair send many requests to the
 * same few peers, and a new connection each time cost a TCP connect and the
 * token handshake, twice per copy (bench/replication.js measured ~58 ms of
 * fixed cost for 8 copies, most of it connections and etcd round trips).
 *
 * One channel per peer (endpoint, local address, TLS or not) carries any
 * number of requests at once, matched by rid; raw answers arrive one after
 * the other, which is as fast as parallel connections here since one event
 * loop reads them all. A channel that fails leaves the pool at once; one
 * that a caller asks to retire (a transfer failed on it) takes no new
 * requests and closes once its last one is done, so a failure never kills
 * the other transfers sharing it. An idle channel closes after `idleMs`.
 *
 * A peer that restarted leaves a dead channel behind until its close is
 * seen; a request that fails with ERR_DISCONNECTED on a channel that had
 * served requests before is sent again, once, on a new one (every request
 * sent this way is safe to repeat: get, replicate, delete).
 */
import { RpcChannel, type RpcChannelOptions } from '../client/rpc-channel.js';
import { TrellisError } from '../errors.js';

/** What identifies a peer connection besides the peer: who we are to it, and how we reach it. */
export type PeerChannelOptions = Omit<RpcChannelOptions, 'host' | 'port'>;

interface Pooled {
  key: string;
  ch: RpcChannel;
  /** Requests in flight on it. */
  users: number;
  /** Requests it completed (a channel that served none cannot be stale). */
  served: number;
  retiring: boolean;
  idleTimer: NodeJS.Timeout | null;
}

/** An unused channel closes after this long (the peer may be gone, or busy with others). */
export const PEER_IDLE_MS = 30_000;

export interface PeerChannelStats {
  /** Connections opened (each a TCP connect and a handshake). */
  opened: number;
  /** Requests sent on a connection opened earlier. */
  reused: number;
  /** Requests sent again on a new connection after a stale one failed. */
  retried: number;
  /** Connections open now. */
  open: number;
}

export class PeerChannels {
  /** Peer key → its channel, while it opens and once it is open. */
  private readonly pool = new Map<string, Promise<Pooled>>();
  /** Peer key → the open channel the pool holds for it. */
  private readonly current = new Map<string, Pooled>();
  private readonly all = new Set<Pooled>();
  private readonly counters = { opened: 0, reused: 0, retried: 0 };
  private closed = false;

  constructor(private readonly idleMs = PEER_IDLE_MS) {}

  stats(): PeerChannelStats {
    return { ...this.counters, open: this.all.size };
  }

  /** Every open channel (the migrator sums what they received). */
  channels(): RpcChannel[] {
    return [...this.all].map((p) => p.ch);
  }

  /**
   * Runs `fn` on a channel to the peer at `host:port`, opened now or earlier.
   * `fn` may call `retire` (its request failed in a way that must not touch
   * the connection again). A reused channel that turns out dead is replaced
   * and `fn` runs again, once.
   */
  async use<T>(
    host: string,
    port: number,
    opts: PeerChannelOptions,
    fn: (ch: RpcChannel, retire: () => void) => Promise<T>,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const p = await this.acquire(host, port, opts);
      const stale = p.served > 0;
      if (stale) this.counters.reused++;
      try {
        const out = await fn(p.ch, () => this.retire(p));
        p.served++;
        return out;
      } catch (e) {
        if (attempt === 0 && stale && e instanceof TrellisError && e.code === 'ERR_DISCONNECTED' && p.ch.closed) {
          this.counters.retried++;
          continue;
        }
        throw e;
      } finally {
        this.release(p);
      }
    }
  }

  /** Closes every channel; requests in flight fail with ERR_CLOSED. Safe to call twice. */
  close(): void {
    this.closed = true;
    for (const p of this.all) p.ch.close();
  }

  private key(host: string, port: number, opts: PeerChannelOptions): string {
    // The token is part of who we are to the peer: a request with another one must not ride this one's handshake.
    return JSON.stringify([host, port, opts.localAddress ?? '', !!opts.tls, opts.token, opts.idleTimeoutMs ?? null]);
  }

  private async acquire(host: string, port: number, opts: PeerChannelOptions): Promise<Pooled> {
    const key = this.key(host, port, opts);
    // A channel found dead or retiring is replaced; a peer that closes every new one is not tried forever.
    for (let tries = 0; tries < 3; tries++) {
      if (this.closed) throw new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down');
      let entry = this.pool.get(key);
      if (!entry) {
        // Concurrent callers share the one being opened.
        entry = this.open(key, host, port, opts);
        this.pool.set(key, entry);
      }
      const p = await entry;
      if (p.ch.closed || p.retiring) {
        this.forget(p);
        continue;
      }
      p.users++;
      if (p.idleTimer) clearTimeout(p.idleTimer);
      p.idleTimer = null;
      return p;
    }
    throw new TrellisError('ERR_DISCONNECTED', `the store at ${host}:${port} closed every new connection`);
  }

  private async open(key: string, host: string, port: number, opts: PeerChannelOptions): Promise<Pooled> {
    let ch: RpcChannel;
    try {
      ch = await RpcChannel.open({ ...opts, host, port });
    } catch (e) {
      // A peer that cannot be reached is tried again by the next caller, not remembered.
      this.pool.delete(key);
      throw e;
    }
    this.counters.opened++;
    const p: Pooled = { key, ch, users: 0, served: 0, retiring: false, idleTimer: null };
    this.all.add(p);
    this.current.set(key, p);
    ch.onClose = () => {
      this.all.delete(p);
      if (p.idleTimer) clearTimeout(p.idleTimer);
      this.forget(p);
    };
    if (this.closed) ch.close();
    return p;
  }

  /** Takes `p` out of the pool (new callers get a new channel) if it is still the one there. */
  private forget(p: Pooled): void {
    if (this.current.get(p.key) !== p) return;
    this.current.delete(p.key);
    this.pool.delete(p.key);
  }

  private retire(p: Pooled): void {
    p.retiring = true;
    this.forget(p);
  }

  private release(p: Pooled): void {
    p.users--;
    if (p.users > 0 || p.ch.closed) return;
    if (p.retiring) {
      p.ch.close();
      return;
    }
    p.idleTimer = setTimeout(() => p.ch.close(), this.idleMs);
    p.idleTimer.unref();
  }
}
