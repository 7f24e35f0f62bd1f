/**
 * A store's TCP endpoint for remote clients and for other stores (migration).
 * Every connection must open with a hello carrying the cluster's shared
 * token; the token is compared in constant time (sha256 digests through
 * crypto.timingSafeEqual) and a wrong or missing one is answered with
 * ERR_UNAUTHORIZED and the connection closed before any data is read or sent.
 *
 * With `tls` the port speaks only TLS (node:tls): the token still
 * authenticates, TLS adds confidentiality and, with `clientAuth`, peer
 * identity: a peer without a certificate signed by the CA is answered
 * ERR_TLS_HANDSHAKE (an `err` frame over the encrypted channel, so it learns
 * why) and dropped before anything it sent is read. A peer that speaks plain
 * TCP to a TLS port fails its handshake and is dropped; the server goes on.
 *
 * @example
 *   const rpc = await RpcServer.start(store, { host: '127.0.0.1', port: 0, token });
 *   rpc.address(); // { host: '127.0.0.1', port: 41234 }
 *   await rpc.close();
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { invalidParameter, TrellisError } from '../errors.js';
import { encodeFrame } from '../protocol/frame.js';
import { errorReply } from '../protocol/messages.js';
import { peerRefusal, serverTlsOptions, type TlsMaterial } from '../tls-config.js';
import { migratorOf } from './migrate.js';
import { RpcConnection, type RpcHost } from './rpc-connection.js';
import type { RpcStarter, StoreServer } from './store-server.js';

export interface RpcServerOptions {
  /** Address to listen on, e.g. '127.0.0.1', '0.0.0.0'. */
  host: string;
  /** TCP port; 0 picks a free one (see address()). */
  port: number;
  /** The shared secret every peer must present. */
  token: string;
  /** A peer whose announced raw bytes stop coming for this long is dropped, its unfinished put aborted (default 60 s). */
  idleTimeoutMs?: number;
  /** Serve TLS with this certificate (and require client certificates with `clientAuth`); plain TCP without. */
  tls?: TlsMaterial;
  /** A TLS handshake not done in this long drops the peer (default 10 s). */
  handshakeTimeoutMs?: number;
}

export interface RpcStats {
  /** Peers connected now (handshake done or not). */
  connections: number;
  /** Requests served since start. */
  requests: number;
  /** Blob bytes received by put. */
  bytesIn: number;
  /** Blob bytes sent by get (remote reads and migrations from this store). */
  bytesOut: number;
  /** Connections refused for a wrong or missing token. */
  authFailures: number;
  /** Connections whose TLS handshake failed (no or an untrusted client certificate, plain TCP to a TLS port). */
  tlsFailures: number;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export class RpcServer implements RpcHost {
  readonly counters = { requests: 0, bytesIn: 0, bytesOut: 0, authFailures: 0, tlsFailures: 0 };
  private readonly server: Server;
  private readonly conns = new Set<RpcConnection>();
  private readonly tokenDigest: Buffer;
  private closing: Promise<void> | null = null;
  private readonly closeHooks: (() => void)[] = [];
  readonly rawIdleMs: number;

  private constructor(
    readonly store: StoreServer,
    private readonly opts: RpcServerOptions,
  ) {
    this.tokenDigest = digest(opts.token);
    this.rawIdleMs = opts.idleTimeoutMs ?? 60_000;
    if (opts.tls) {
      // Not pauseOnConnect: the handshake must read; the RpcConnection then reads the TLSSocket's 'data'.
      this.server = createTlsServer(
        { ...serverTlsOptions(opts.tls), handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000 },
        (s) => this.accept(s),
      );
      this.server.on('tlsClientError', () => this.counters.tlsFailures++);
    } else {
      this.server = createServer({ pauseOnConnect: true }, (s) => this.accept(s));
    }
  }

  /** Starts serving `store` over TCP; resolves once it listens. */
  static async start(store: StoreServer, opts: RpcServerOptions): Promise<RpcServer> {
    if (typeof opts?.host !== 'string' || opts.host.length === 0) {
      throw invalidParameter('opts.host', 'an address to listen on', opts?.host);
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
      throw invalidParameter('opts.port', 'a TCP port in [0, 65535]', opts.port);
    }
    if (typeof opts.token !== 'string' || opts.token.length === 0) {
      throw invalidParameter('opts.token', 'a non-empty shared token', opts.token);
    }
    const idle = opts.idleTimeoutMs;
    if (idle !== undefined && (!Number.isSafeInteger(idle) || idle <= 0)) {
      throw invalidParameter('opts.idleTimeoutMs', 'a positive number of milliseconds', idle);
    }
    const rpc = new RpcServer(store, opts);
    await rpc.listen();
    return rpc;
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => {
        reject(new TrellisError('ERR_NATIVE', `cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`));
      };
      this.server.once('error', onError);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  /** The address actually bound (the port is the real one when 0 was asked for). */
  address(): { host: string; port: number } {
    const a = this.server.address() as AddressInfo | null;
    if (!a) throw new TrellisError('ERR_CLOSED', 'the RPC server is closed');
    return { host: a.address, port: a.port };
  }

  /** Constant-time comparison of a presented token with the shared one. */
  authenticate(token: unknown): boolean {
    if (typeof token !== 'string' || token.length === 0) return false;
    return timingSafeEqual(digest(token), this.tokenDigest);
  }

  stats(): RpcStats {
    return { connections: this.conns.size, ...this.counters };
  }

  /** What the store's status shows under `rpc` (beside the address): these counters and the migrations in. */
  describe(): Record<string, unknown> {
    return {
      ...this.stats(),
      tls: this.opts.tls ? { clientAuth: this.opts.tls.clientAuth } : null,
      migration: migratorOf(this.store).stats(),
    };
  }

  /** Runs `hook` when the server closes (e.g. stops the store's migrations). */
  closeWith(hook: () => void): void {
    this.closeHooks.push(hook);
  }

  forget(conn: RpcConnection): void {
    this.conns.delete(conn);
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const why = this.opts.tls ? peerRefusal(this.opts.tls, socket as TLSSocket) : null;
    if (why !== null) {
      this.counters.tlsFailures++;
      const err = new TrellisError(
        'ERR_TLS_HANDSHAKE',
        `the store at ${this.opts.host}:${this.address().port} requires a client certificate signed by its CA; ` +
          `this one was refused (${why})`,
      );
      socket.end(encodeFrame(errorReply(0, err)));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.conns.add(new RpcConnection(socket, this));
  }

  /** Stops listening and drops every peer (their unfinished puts are aborted). Safe to call twice. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const c of [...this.conns]) c.destroy();
      for (const hook of this.closeHooks) hook();
    });
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Wildcard addresses name no interface to connect from. */
function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

/**
 * How StoreServer.start serves RPC (the CLI links it in): the server, and
 * migrations from other stores with the same token, connecting from this
 * store's RPC host so the traffic runs between the two stores' addresses.
 */
export const startRpc: RpcStarter = async (store, opts) => {
  const rpc = await RpcServer.start(store, opts);
  const localAddress = isWildcard(opts.host) ? undefined : opts.host;
  const migrator = migratorOf(store);
  store.cluster.setMigration({
    // With TLS, outgoing RPC verifies the peer store with the same CA and presents this store's certificate.
    pull: (endpoint, remoteId) =>
      migrator.migrate(endpoint, opts.token, remoteId, { localAddress, ...(opts.tls ? { tls: opts.tls } : {}) }),
    copyOf: (remoteId) => migrator.copyOf(remoteId),
    ask: (endpoint, body) => migrator.ask(endpoint, opts.token, body, { localAddress }),
  });
  // The store closes its RPC server before its arena: transfers into the arena stop first.
  rpc.closeWith(() => migrator.close());
  return rpc;
};
