/**
 * How a failed command reports: one line `trellis: CODE: message` on stderr,
 * and, for the commands people and scripts run (`put`, `get`, `ls`, `rm`,
 * `ingest`, `jobs ...`), an exit code a script can branch on
 * (docs/OPERATIONS.md lists them). The daemons (`store`, `api`, `agent`)
 * exit 1 on any failure.
 */
import type { CommanderError } from 'commander';
import { isTrellisError } from '../errors.js';

export const EXIT = {
  /** Any failure not listed below. */
  general: 1,
  /** Bad flags or arguments (TLS files that cannot be used too), or the API refused the request as malformed (ERR_BAD_REQUEST). */
  usage: 2,
  /** The job, dataset or route does not exist. */
  notFound: 3,
  /** The token was missing or wrong (ERR_UNAUTHORIZED). */
  unauthorized: 4,
  /** The API or the store could not be reached, did not answer in time, or a TLS certificate was not trusted. */
  unreachable: 5,
  /** An input file is unreadable, truncated, malformed or of a dtype Trellis lacks. */
  badFile: 6,
  /** The name is taken already (ERR_OBJECT_EXISTS). */
  exists: 7,
  /** The store has no room for it (ERR_OUT_OF_MEMORY). */
  noSpace: 8,
} as const;

export function exitCodeOf(e: unknown): number {
  if (!isTrellisError(e)) return EXIT.general;
  switch (e.code) {
    case 'ERR_BAD_REQUEST':
    case 'ERR_TLS_CONFIG':
      return EXIT.usage;
    case 'ERR_JOB_NOT_FOUND':
    case 'ERR_NAME_NOT_FOUND':
    case 'ERR_OBJECT_NOT_FOUND':
    case 'ERR_ROUTE_NOT_FOUND':
      return EXIT.notFound;
    case 'ERR_UNAUTHORIZED':
      return EXIT.unauthorized;
    case 'ERR_DISCONNECTED':
    case 'ERR_TIMEOUT':
    case 'ERR_TLS_HANDSHAKE':
      return EXIT.unreachable;
    case 'ERR_FILE_FORMAT':
    case 'ERR_FILE_TRUNCATED':
    case 'ERR_FILE_UNREADABLE':
    case 'ERR_SIZE_MISMATCH':
    case 'ERR_UNSUPPORTED':
      return EXIT.badFile;
    case 'ERR_OBJECT_EXISTS':
      return EXIT.exists;
    case 'ERR_OUT_OF_MEMORY':
      return EXIT.noSpace;
    default:
      return EXIT.general;
  }
}

/** The one line a failed command prints. */
export function formatError(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown } | undefined;
  return `trellis: ${err?.code ? `${err.code}: ` : ''}${err?.message ?? e}\n`;
}

/** Runs an action; a failure is printed once and becomes the process's exit code. */
export function reported<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      process.stderr.write(formatError(e));
      process.exitCode = exitCodeOf(e);
    }
  };
}

/** For `.exitOverride`: bad flags or arguments exit 2 (EXIT.usage), --help and --version 0. */
export function usageExit(err: CommanderError): never {
  process.exit(err.exitCode === 0 ? 0 : EXIT.usage);
}
