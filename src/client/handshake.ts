/**
 * The IPC handshake: connect to the store's socket, send hello with
 * `attach`, and receive the answer together with the fds a first get needs
 * (the segments', the fast path's directory and this client's pin page), all
 * in one round trip done natively (native/fd-passing.cc): the fds must be
 * received by recvmsg before libuv owns the socket, and a fresh process
 * would spend milliseconds in net's cold code for the same round trip.
 * docs/PROTOCOL.md ("Handshake") describes the exchange.
 */
import { constants } from 'node:os';
import { TrellisError } from '../errors.js';
import { errnoOf, type Handshake, native } from '../native.js';
import { decodeError, decodeReply, type HelloReply, PROTOCOL_VERSION, type RequestOf } from '../protocol/messages.js';
import { storeInThread } from './stores-in-thread.js';

/**
 * How long connect blocks its thread for the hello answer before it waits on
 * a worker thread instead: a store answers in ~0.1 ms, so this only runs out
 * on a store that is busy, or one this thread serves without a StoreServer
 * (a test's fake store), which answers once the thread is free again.
 */
const BLOCKING_WAIT_MS = 10;

/** A connection past its hello: the socket's fd, the checked answer, and the fds, split by what they are. */
export interface Attached {
  socket: number;
  hello: HelloReply;
  /** One per `hello.attached.segments` entry. */
  segmentFds: number[];
  /** Directory and pin page, when the store sent the fast path. */
  fastFds: [directory: number, pins: number] | null;
}

export async function handshake(path: string, client: string, timeoutMs: number): Promise<Attached> {
  // The header as encodeRequest writes it, made here without a Buffer (cold code costs here).
  const hello: RequestOf<'hello'> = { rid: 1, t: 'hello', version: PROTOCOL_VERSION, client, attach: true };
  const req = JSON.stringify(hello);
  let raw: Handshake;
  try {
    // A store of this thread could not answer while the thread waits: then at once off it.
    raw = await native.handshake(path, req, timeoutMs, storeInThread() ? 0 : Math.min(BLOCKING_WAIT_MS, timeoutMs));
  } catch (e) {
    throw handshakeError(e, path, timeoutMs);
  }
  try {
    return checkAttached(raw);
  } catch (e) {
    native.closeFd(raw.socket);
    for (const fd of raw.fds) native.closeFd(fd);
    throw e;
  }
}

/** The answer and its fds, checked against each other (ERR_PROTOCOL when they disagree); throws the store's error. */
export function checkAttached(raw: Handshake): Attached {
  let header: unknown;
  try {
    header = JSON.parse(raw.header);
  } catch {
    throw new TrellisError('ERR_PROTOCOL', "the store's hello answer is not JSON");
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new TrellisError('ERR_PROTOCOL', "the store's hello answer is not a JSON object");
  }
  const h = header as Record<string, unknown>;
  if (h.t === 'err') throw decodeError(h);
  if (h.rid !== 1) throw new TrellisError('ERR_PROTOCOL', `the hello answer is for request ${String(h.rid)}`);
  const hello = decodeReply('hello', h);
  const a = hello.attached;
  const expected = a ? a.segments.length + (a.fastpath ? 2 : 0) : 0;
  if (raw.fds.length !== expected) {
    throw new TrellisError(
      'ERR_PROTOCOL',
      `the hello answer came with ${raw.fds.length} fds, it describes ${expected}`,
    );
  }
  const n = a?.segments.length ?? 0;
  return {
    socket: raw.socket,
    hello,
    segmentFds: raw.fds.slice(0, n),
    fastFds: a?.fastpath ? [raw.fds[n], raw.fds[n + 1]] : null,
  };
}

/** A failed handshake call as a typed error: the errno says which. */
function handshakeError(e: unknown, path: string, timeoutMs: number): TrellisError {
  const errno = errnoOf(e);
  if (errno === undefined) return e instanceof TrellisError ? e : new TrellisError('ERR_INTERNAL', String(e));
  const cause = e instanceof TrellisError ? e.cause : e;
  const syscall = (cause as { syscall?: string } | undefined)?.syscall ?? '';
  const name = Object.entries(constants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
  if (errno === constants.errno.ETIMEDOUT) {
    const what = syscall === 'connect' ? 'connecting to' : 'the handshake with';
    return new TrellisError('ERR_TIMEOUT', `${what} the store at ${path} took longer than ${timeoutMs} ms`, {
      cause: e,
    });
  }
  if (syscall === 'connect' || syscall === 'socket') {
    return new TrellisError('ERR_DISCONNECTED', `cannot connect to the store at ${path}: ${name}`, { cause: e });
  }
  if (errno === constants.errno.EMSGSIZE || errno === constants.errno.EBADMSG) {
    return new TrellisError('ERR_PROTOCOL', `the store's hello answer is malformed (${syscall})`, { cause: e });
  }
  const why = `the store at ${path} closed the connection during the handshake: ${name}`;
  return new TrellisError('ERR_DISCONNECTED', why, { cause: e });
}
