/**
 * The HTTP status of every error code, in one place. A Record over ErrorCode
 * rather than a switch with a default: adding a code to src/errors.ts fails
 * to compile until it is given a status here (and docs/ERRORS.md lists it;
 * test/jobs-api-errors.test.ts checks the two agree).
 */
import type { ErrorCode } from '../../errors.js';

const STATUS: Record<ErrorCode, number> = {
  ERR_BAD_REQUEST: 400,
  ERR_SIZE_MISMATCH: 400,
  ERR_UNSUPPORTED: 400,
  ERR_MODEL_INVALID: 400,
  ERR_FILE_FORMAT: 400,
  ERR_FILE_TRUNCATED: 400,
  ERR_FILE_UNREADABLE: 400,
  ERR_UNAUTHORIZED: 401,
  ERR_NOT_OWNER: 403,
  ERR_OBJECT_NOT_FOUND: 404,
  ERR_NAME_NOT_FOUND: 404,
  ERR_JOB_NOT_FOUND: 404,
  ERR_ROUTE_NOT_FOUND: 404,
  ERR_HANDLER_NOT_FOUND: 404,
  ERR_OBJECT_EXISTS: 409,
  ERR_NOT_SEALED: 409,
  ERR_ALREADY_SEALED: 409,
  ERR_OBJECT_IN_USE: 409,
  ERR_NOT_REFERENCED: 409,
  ERR_OBJECT_REMOTE: 409,
  ERR_CANCELLED: 409,
  ERR_OBJECT_LOST: 410,
  ERR_PAYLOAD_TOO_LARGE: 413,
  ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  ERR_INTERNAL: 500,
  ERR_NATIVE: 500,
  ERR_SPILL_FAILED: 500,
  ERR_WORKER_FAILED: 500,
  ERR_RANK_LOST: 500,
  ERR_INFERENCE_FAILED: 500,
  ERR_HANDLER_FAILED: 500,
  ERR_TLS_CONFIG: 500,
  // A store or worker behind the API misbehaved or went away: the API is a gateway to it.
  ERR_PROTOCOL: 502,
  ERR_RING_RECORD: 502,
  ERR_DISCONNECTED: 502,
  ERR_TLS_HANDSHAKE: 502,
  ERR_CLOSED: 503,
  ERR_SHUTTING_DOWN: 503,
  ERR_META_UNAVAILABLE: 503,
  ERR_IDS_EXHAUSTED: 503,
  ERR_QUEUE_UNAVAILABLE: 503,
  ERR_REDIS_EVICTS: 503,
  ERR_COLLECTIVE_ABORTED: 502,
  ERR_REPLICAS_UNAVAILABLE: 503,
  ERR_STORE_UNAVAILABLE: 503,
  ERR_TIMEOUT: 504,
  ERR_OUT_OF_MEMORY: 507,
};

export function httpStatusOf(code: ErrorCode): number {
  return STATUS[code];
}
