/**
 * The TLS flags, defined once for every command (docs/OPERATIONS.md, "TLS").
 * Servers (store, api) take a certificate, its key, a CA and
 * --tls-client-auth; clients (status --rpc, jobs) take the CA to trust and,
 * for a server that wants client certificates, their own cert and key.
 */
import { Option } from 'commander';
import type { TlsFiles } from '../tls-config.js';

export const tlsFlag = {
  cert: (what: string) => new Option('--tls-cert <file>', `PEM certificate (chain) ${what}`),
  key: () => new Option('--tls-key <file>', 'the PEM private key of --tls-cert'),
  ca: (what: string) => new Option('--tls-ca <file>', `PEM CA bundle ${what}`),
  clientAuth: () =>
    new Option('--tls-client-auth', 'require every client to present a certificate signed by --tls-ca (mutual TLS)'),
};

interface TlsFlagValues {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsClientAuth?: boolean;
}

/** The files the flags name (the CA from $`envCa` when given and the flag is not), or undefined when none. */
export function tlsFilesOf(o: TlsFlagValues, envCa?: string): TlsFiles | undefined {
  const ca = o.tlsCa ?? (envCa ? process.env[envCa] || undefined : undefined);
  const files: TlsFiles = {
    ...(o.tlsCert === undefined ? {} : { cert: o.tlsCert }),
    ...(o.tlsKey === undefined ? {} : { key: o.tlsKey }),
    ...(ca === undefined ? {} : { ca }),
    ...(o.tlsClientAuth ? { clientAuth: true } : {}),
  };
  return Object.keys(files).length > 0 ? files : undefined;
}
