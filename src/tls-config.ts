/**
 * TLS settings shared by every door that can speak TLS: a store's RPC server
 * and its outgoing RPC, remote clients, the jobs API and its clients. The
 * files are read and checked once, at start (a wrong path, a key that does
 * not match its certificate, a file that is not PEM all fail there with
 * ERR_TLS_CONFIG, never at the first peer), and turned into node:tls options.
 * A connection whose handshake fails gets ERR_TLS_HANDSHAKE (tlsFailure).
 *
 * @example
 *   const tls = loadTls({ cert: 'store.pem', key: 'store.key', ca: 'ca.pem', clientAuth: true }, 'server');
 *   tls.createServer(serverTlsOptions(tls), ...);
 */
import { readFileSync } from 'node:fs';
import { type ConnectionOptions, createSecureContext, type TLSSocket, type TlsOptions } from 'node:tls';
import { TrellisError } from './errors.js';

/** Paths of the PEM files, as the CLI flags give them. */
export interface TlsFiles {
  /** This side's certificate chain (--tls-cert). */
  cert?: string;
  /** Its private key (--tls-key). */
  key?: string;
  /** The CA bundle peers' certificates must chain to (--tls-ca). */
  ca?: string;
  /** A server asks every peer for a certificate signed by `ca` and refuses those without one (--tls-client-auth). */
  clientAuth?: boolean;
}

/** The files' contents, checked. */
export interface TlsMaterial {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
  clientAuth: boolean;
}

/** TLS 1.2 is the oldest any Trellis door accepts. */
const MIN_VERSION = 'TLSv1.2';

function read(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new TrellisError(
      'ERR_TLS_CONFIG',
      `cannot read ${flag} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

/**
 * Reads and checks the files. A `server` needs cert and key (and ca with
 * clientAuth); a `client` needs at least ca or a cert to present, and cert
 * and key go together.
 */
export function loadTls(files: TlsFiles, role: 'server' | 'client'): TlsMaterial {
  const { cert, key, ca } = files;
  const clientAuth = files.clientAuth === true;
  if (role === 'server' && (cert === undefined || key === undefined)) {
    throw new TrellisError('ERR_TLS_CONFIG', 'serving TLS needs both --tls-cert and --tls-key');
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw new TrellisError('ERR_TLS_CONFIG', '--tls-cert and --tls-key go together');
  }
  if (clientAuth && ca === undefined) {
    throw new TrellisError(
      'ERR_TLS_CONFIG',
      "--tls-client-auth needs --tls-ca, the CA peers' certificates must chain to",
    );
  }
  if (clientAuth && role === 'client') {
    throw new TrellisError('ERR_TLS_CONFIG', '--tls-client-auth is a server setting');
  }
  const m: TlsMaterial = {
    ...(cert === undefined ? {} : { cert: read('--tls-cert', cert) }),
    ...(key === undefined ? {} : { key: read('--tls-key', key) }),
    ...(ca === undefined ? {} : { ca: read('--tls-ca', ca) }),
    clientAuth,
  };
  if (!m.cert && !m.ca) throw new TrellisError('ERR_TLS_CONFIG', 'a TLS client needs --tls-ca (or a cert to present)');
  try {
    // OpenSSL parses everything here: bad PEM, a key that is not the cert's, an unreadable CA.
    createSecureContext({ cert: m.cert, key: m.key, ca: m.ca });
  } catch (e) {
    const which = [cert && `--tls-cert ${cert}`, key && `--tls-key ${key}`, ca && `--tls-ca ${ca}`]
      .filter(Boolean)
      .join(', ');
    throw new TrellisError('ERR_TLS_CONFIG', `the TLS files (${which}) cannot be used: ${(e as Error).message}`);
  }
  return m;
}

/** Loads the files when any TLS flag was given; undefined (plain TCP) otherwise. */
export function loadTlsIfAny(files: TlsFiles, role: 'server' | 'client'): TlsMaterial | undefined {
  const any = files.cert !== undefined || files.key !== undefined || files.ca !== undefined || files.clientAuth;
  return any ? loadTls(files, role) : undefined;
}

/**
 * Options for tls.createServer / fastify's https. With clientAuth the peer's
 * certificate is asked for but checked by the server after the handshake
 * (peerRefusal): refused during it, a TLS 1.3 client only sees its connection
 * close (the alert races the close), never why.
 */
export function serverTlsOptions(m: TlsMaterial): TlsOptions {
  return {
    cert: m.cert,
    key: m.key,
    ...(m.ca ? { ca: m.ca } : {}),
    requestCert: m.clientAuth,
    rejectUnauthorized: false,
    minVersion: MIN_VERSION,
  };
}

/**
 * Why a server with clientAuth must refuse this peer, or null when its
 * certificate is signed by the CA (always null without clientAuth).
 */
export function peerRefusal(m: TlsMaterial, socket: TLSSocket): string | null {
  if (!m.clientAuth || socket.authorized) return null;
  // OpenSSL reports a missing certificate as an issuer problem; say what happened instead.
  if (Object.keys(socket.getPeerCertificate()).length === 0) return 'none was presented';
  return String(socket.authorizationError);
}

/** Options for tls.connect: trust `ca` (else the system's CAs), present cert and key when given. */
export function clientTlsOptions(m: TlsMaterial): ConnectionOptions {
  return {
    ...(m.ca ? { ca: m.ca } : {}),
    ...(m.cert ? { cert: m.cert, key: m.key } : {}),
    minVersion: MIN_VERSION,
  };
}

/** X.509 verification results OpenSSL reports (they are not ERR_SSL_*). */
const VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_PURPOSE',
  'HOSTNAME_MISMATCH',
]);

/** True for the error of a TLS handshake or certificate check (as opposed to the network). */
export function isTlsError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || VERIFY_CODES.has(code);
}

/** The typed error for a failed handshake with `peer`, naming OpenSSL's reason. */
export function tlsFailure(peer: string, e: unknown): TrellisError {
  const err = e as NodeJS.ErrnoException;
  const reason = err.code ? `${err.code}: ${err.message}` : String(err?.message ?? e);
  return new TrellisError('ERR_TLS_HANDSHAKE', `the TLS handshake with ${peer} failed (${reason})`, { cause: e });
}
