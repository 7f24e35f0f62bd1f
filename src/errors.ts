/**
 * One error class with stable string codes. Every code is listed here once,
 * with its meaning; docs/ERRORS.md mirrors this table and a test keeps the two
 * in step. Codes are never reused or renamed.
 */
export const ERROR_CODES = {
  ERR_BAD_REQUEST: 'A request or argument is malformed: wrong type, missing field, out of range.',
  ERR_PROTOCOL: 'The peer broke the wire protocol: bad frame, oversized length, unknown message, wrong version.',
  ERR_OBJECT_NOT_FOUND: 'No object with that id exists in the store (or it was deleted).',
  ERR_NAME_NOT_FOUND: 'No object is bound to that name.',
  ERR_OBJECT_EXISTS: 'The name or id is already taken.',
  ERR_OUT_OF_MEMORY: 'The store cannot fit the allocation within its memory limit, even after spilling.',
  ERR_NOT_SEALED: 'The blob is still being written; it can be read only after seal.',
  ERR_ALREADY_SEALED: 'The blob was sealed already; it cannot be sealed, aborted or written again.',
  ERR_NOT_OWNER: 'Only the connection that created an unsealed blob may seal or abort it.',
  ERR_OBJECT_IN_USE: 'The object is a member of another live object and cannot be deleted alone.',
  ERR_NOT_REFERENCED: 'release() of an object this client holds no reference to.',
  ERR_DISCONNECTED: 'The connection to the store closed or failed before an answer arrived.',
  ERR_CLOSED: 'The client was closed; no further calls are possible.',
  ERR_TIMEOUT: 'The operation did not finish in the time allowed.',
  ERR_UNAUTHORIZED: 'The credentials were missing or wrong.',
  ERR_SPILL_FAILED: 'Writing an object to the spill directory, or reading it back, failed.',
  ERR_SIZE_MISMATCH: 'A length does not agree with the shape, dtype or declared size.',
  ERR_UNSUPPORTED: 'The value or type is not supported by this codec or this connection.',
  ERR_NATIVE: 'A system call in the native core failed.',
  ERR_SHUTTING_DOWN: 'The store or the jobs API is shutting down and takes no new work.',
  ERR_OBJECT_LOST: 'The object was persisted by a store that is gone (its lease expired); its data is lost.',
  ERR_OBJECT_REMOTE: 'The object lives on another store; migrate it here (client.migrate) or read it over RPC.',
  ERR_META_UNAVAILABLE: 'The metadata service (etcd) did not answer; cluster-wide operations cannot complete now.',
  ERR_INTERNAL: 'A bug: the store hit a state it did not expect. The message says where; please report it.',
  ERR_WORKER_FAILED:
    'A worker (a loader gather process, an inference pool thread, a job task host) died, or failed with an error without a code.',
  ERR_MODEL_INVALID: 'The bytes are not an ONNX model onnxruntime can load; the message carries its reason.',
  ERR_INFERENCE_FAILED: 'onnxruntime failed while running a model; the message carries its reason.',
  ERR_JOB_NOT_FOUND: 'No job with that id exists.',
  ERR_ROUTE_NOT_FOUND: 'No HTTP route answers that method and path.',
  ERR_PAYLOAD_TOO_LARGE: 'The HTTP request body is larger than the server accepts.',
  ERR_UNSUPPORTED_MEDIA_TYPE: 'The HTTP request body has a content type the route does not accept (JSON bodies only).',
  ERR_QUEUE_UNAVAILABLE: 'The task queues (Redis) did not answer; jobs cannot be submitted, changed or read now.',
  ERR_HANDLER_NOT_FOUND: "No map handler of that name is in the agent's --handlers directories.",
  ERR_HANDLER_FAILED:
    'A map handler threw an error that is not a TrellisError, could not be loaded, or returned a value that cannot be stored; the message carries its reason.',
  ERR_CANCELLED:
    'The task or job was cancelled (by request, a job timeout or an agent shutting down) before it finished.',
  ERR_IDS_EXHAUSTED: 'The metadata service has handed out every instance id (65535) of its prefix; use a new prefix.',
  ERR_REDIS_EVICTS:
    'The Redis server may evict keys (its maxmemory-policy is not noeviction), which would silently lose jobs and queued tasks; set maxmemory-policy noeviction.',
  ERR_COLLECTIVE_ABORTED:
    'A collective step (allReduce, broadcast) could not complete: a peer rank or its store failed or closed, the step timed out, or it was aborted; the group cannot go on; open a new one (a new group name).',
  ERR_TLS_CONFIG:
    "A TLS certificate, key or CA file cannot be read or used (missing, not PEM, a key that is not the certificate's), or the TLS flags do not fit together.",
  ERR_TLS_HANDSHAKE:
    "The TLS handshake failed: the peer's certificate is not signed by the trusted CA or does not name the host, a certificate the server requires was not presented, or one side speaks TLS and the other does not.",
  ERR_RANK_LOST:
    'A rank of a data-parallel train job was lost (its agent or node died, or it stopped answering) more often than the job restarts its group (maxRestarts).',
  ERR_REPLICAS_UNAVAILABLE:
    'Too few live stores with room (and an RPC endpoint) to keep the number of copies asked for, each on a distinct store.',
  ERR_FILE_FORMAT:
    'The file is not what its format says: wrong magic, a header that does not parse, or a layout Trellis cannot read (the message says which).',
  ERR_FILE_TRUNCATED: 'The file ends before the data its header announces.',
  ERR_FILE_UNREADABLE:
    "The file could not be opened or read (missing, a directory, no permission); the message carries the system's reason.",
  ERR_RING_RECORD:
    "A record in a client's put ring broke the ring's rules (outside its slab, not at the cursor, an id outside its lease, a size that disagrees with dtype and shape); the store failed that client and kept the records before it.",
  ERR_STORE_UNAVAILABLE:
    'The jobs API reaches no store now (none is running or registered yet): it cannot read datasets or place jobs until one is; it connects once one is there.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorPayload {
  code: string;
  message: string;
}

export class TrellisError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TrellisError';
    this.code = code;
  }

  /** The form errors take on the wire. */
  toPayload(): ErrorPayload {
    return { code: this.code, message: this.message };
  }

  /** Rebuild an error that crossed a process boundary; unknown codes become ERR_PROTOCOL. */
  static fromPayload(p: ErrorPayload): TrellisError {
    const code = (p.code in ERROR_CODES ? p.code : 'ERR_PROTOCOL') as ErrorCode;
    return new TrellisError(code, String(p.message));
  }
}

export function isTrellisError(e: unknown, code?: ErrorCode): e is TrellisError {
  return e instanceof TrellisError && (code === undefined || e.code === code);
}

/**
 * Any thrown value as a TrellisError: a TrellisError stays itself; anything
 * else becomes `code` (ERR_INTERNAL, a bug, unless the caller knows better,
 * e.g. ERR_WORKER_FAILED) with `context` before its message, keeping it as
 * the cause. The one place that turns foreign errors into ours.
 */
export function asTrellisError(e: unknown, code: ErrorCode = 'ERR_INTERNAL', context?: string): TrellisError {
  if (e instanceof TrellisError) return e;
  const text = e instanceof Error ? (e.stack ?? e.message) : String(e);
  return new TrellisError(code, context ? `${context}: ${text}` : text, { cause: e });
}

/** The one message factory for argument errors: names the parameter, what was expected, what came. */
export function invalidParameter(name: string, expected: string, actual: unknown): TrellisError {
  return new TrellisError('ERR_BAD_REQUEST', `Expected ${name} to be ${expected} but received ${describe(actual)}`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  if (Array.isArray(v)) return `array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name} of ${v.byteLength} bytes`;
  return typeof v === 'object' ? `object ${(v as object).constructor?.name ?? 'Object'}` : typeof v;
}
