/**
 * How a failed command reports: one line `trellis: CODE: message` on stderr,
 * and for `trellis jobs` an exit code a script can branch on
 * (docs/OPERATIONS.md lists them). Other commands exit 1 on any failure.
 */
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
  /** The API could not be reached, did not answer in time, or its TLS certificate was not trusted. */
  unreachable: 5,
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
    default:
      return EXIT.general;
  }
}

/** The one line a failed command prints. */
export function formatError(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown } | undefined;
  return `trellis: ${err?.code ? `${err.code}: ` : ''}${err?.message ?? e}\n`;
}
