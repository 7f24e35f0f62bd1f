/**
 * Answering one request, the same for IPC and RPC connections: run the
 * handler, and send `ok` with its fields or `err` with a code — never throw
 * into the connection, even when the answer itself cannot be encoded.
 */
import { asTrellisError, TrellisError } from '../errors.js';
import { errorReply } from './messages.js';

export type Sender = (header: object) => void;

export function sendError(send: Sender, rid: number, e: unknown): void {
  const err = asTrellisError(e);
  send(errorReply(rid, err));
}

export function sendOk(send: Sender, rid: number, fields: object): void {
  try {
    send({ t: 'ok', rid, ...fields });
  } catch (e) {
    sendError(send, rid, new TrellisError('ERR_INTERNAL', `the answer could not be encoded: ${(e as Error).message}`));
  }
}

/** Runs a handler (sync or async) and answers with its result or its error. */
export function respond(send: Sender, rid: number, fn: () => object | Promise<object>): void {
  let out: object | Promise<object>;
  try {
    out = fn();
  } catch (e) {
    sendError(send, rid, e);
    return;
  }
  if (out instanceof Promise) {
    out.then(
      (v) => sendOk(send, rid, v),
      (e) => sendError(send, rid, e),
    );
  } else {
    sendOk(send, rid, out);
  }
}
