/**
 * The one module that loads the addon. Everything else imports from here;
 * arguments are validated by callers before they reach C++.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { markAsUntransferable } from 'node:worker_threads';
import { ERROR_CODES, type ErrorCode, TrellisError } from './errors.js';
import { PACKAGE_ROOT } from './package-root.js';

/** Copies batches of rows out of a dataset's parts (native/row-gather.cc); see LocalRows.gather. */
export interface RowGather {
  /** Rows order[start..end) (start..end when order is null) into dst: features from 0, labels from yOffset. */
  gather(order: Uint32Array | null, start: number, end: number, dst: Uint8Array, yOffset: number): void;
}

export interface NativeAddon {
  RowGather: new (xParts: Uint8Array[], yParts: Uint8Array[], rowBytes: number, labelBytes: number) => RowGather;
  /** hugePages: on hugetlbfs (2 MiB pages from vm.nr_hugepages); reserve() them all before mapping. */
  memfdCreate(name: string, size: number, hugePages?: boolean): number;
  map(fd: number, size: number, writable: boolean, populate?: boolean): ArrayBuffer;
  punchHole(fd: number, offset: number, length: number): void;
  reserve(fd: number, offset: number, length: number): void;
  populate(buffer: ArrayBuffer, offset: number, length: number, write: boolean): boolean;
  populateAsync(buffer: ArrayBuffer, offset: number, length: number): Promise<void>;
  residentBytes(fd: number): number;
  fdSize(fd: number): number;
  closeFd(fd: number): void;
  address(buffer: ArrayBuffer): bigint;
  sendFds(socketFd: number, payload: Uint8Array, fds: number[]): void;
  requestFds(socketPath: string, request: Uint8Array, timeoutMs: number): Promise<{ data: Buffer; fds: number[] }>;
  /**
   * Connects, sends one frame with the JSON header `header` and receives one
   * answer frame (a header, no payload) with its fds; the socket stays open.
   * Blocks this thread up to `waitMs` for the answer, then goes on waiting on
   * a worker thread (a promise).
   */
  handshake(socketPath: string, header: string, timeoutMs: number, waitMs: number): Handshake | Promise<Handshake>;
}

/** A handshake's result: the connected socket's fd, the answer's JSON header text and the fds it carried. */
export interface Handshake {
  socket: number;
  header: string;
  fds: number[];
}

const require = createRequire(import.meta.url);
const raw = require(join(PACKAGE_ROOT, 'build/Release/trellis_native.node')) as NativeAddon;

/** Largest segment: Node 20 cannot hold a bigger ArrayBuffer safely. */
export const MAX_SEGMENT_SIZE = 4 * 1024 ** 3;

function wrap<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    try {
      return fn(...args);
    } catch (e) {
      throw nativeError(e);
    }
  };
}

/** The errno of a failed system call behind a native error (undefined for other errors). */
export function errnoOf(e: unknown): number | undefined {
  const cause = e instanceof TrellisError ? e.cause : e;
  const n = (cause as { errno?: unknown } | null | undefined)?.errno;
  return typeof n === 'number' ? n : undefined;
}

export function nativeError(e: unknown): TrellisError {
  if (e instanceof TrellisError) return e;
  const err = e as { message?: string; errno?: number; syscall?: string; code?: unknown };
  // a guard in C++ that names its code (native/row-gather.cc)
  if (err && typeof err.code === 'string' && err.code in ERROR_CODES)
    return new TrellisError(err.code as ErrorCode, String(err.message), { cause: e });
  if (err && err.errno === 28 /* ENOSPC */) {
    return new TrellisError('ERR_OUT_OF_MEMORY', `The system has no memory left for the arena: ${err.message}`, {
      cause: e,
    });
  }
  return new TrellisError('ERR_NATIVE', String(err?.message ?? e), { cause: e });
}

/** A RowGather whose guards throw TrellisErrors. */
class CheckedRowGather implements RowGather {
  private readonly inner: RowGather;
  constructor(xParts: Uint8Array[], yParts: Uint8Array[], rowBytes: number, labelBytes: number) {
    try {
      this.inner = new raw.RowGather(xParts, yParts, rowBytes, labelBytes);
    } catch (e) {
      throw nativeError(e);
    }
  }
  gather(order: Uint32Array | null, start: number, end: number, dst: Uint8Array, yOffset: number): void {
    try {
      this.inner.gather(order, start, end, dst, yOffset);
    } catch (e) {
      throw nativeError(e);
    }
  }
}

export const native: NativeAddon = {
  RowGather: CheckedRowGather,
  memfdCreate: wrap(raw.memfdCreate),
  // A read-only mapping is unmapped when its ArrayBuffer object is collected
  // (native/segment.cc): a transfer to another thread must copy it instead
  // of moving its memory away. A writable one moves safely.
  map: wrap((fd, size, writable, populate) => {
    const ab = raw.map(fd, size, writable, populate ?? false);
    if (!writable) markAsUntransferable(ab);
    return ab;
  }),
  punchHole: wrap(raw.punchHole),
  reserve: wrap(raw.reserve),
  populate: wrap(raw.populate),
  populateAsync: (buffer, offset, length) =>
    raw.populateAsync(buffer, offset, length).catch((e: unknown) => {
      throw nativeError(e);
    }),
  residentBytes: wrap(raw.residentBytes),
  fdSize: wrap(raw.fdSize),
  closeFd: wrap(raw.closeFd),
  address: wrap(raw.address),
  sendFds: wrap(raw.sendFds),
  handshake: wrap((path, request, timeoutMs, waitMs) => {
    const out = raw.handshake(path, request, timeoutMs, waitMs);
    return out instanceof Promise
      ? out.catch((e: unknown) => {
          throw nativeError(e);
        })
      : out;
  }),
  requestFds: (path, request, timeoutMs) =>
    raw.requestFds(path, request, timeoutMs).catch((e: unknown) => {
      throw nativeError(e);
    }),
};
