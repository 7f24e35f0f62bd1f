/**
 * The client's side of the store's fd channel (docs/PROTOCOL.md): one
 * short-lived connection per ask, answered with SCM_RIGHTS, on a worker
 * thread so a store in this thread keeps serving. Segment mappings, the fast
 * path and the put ring all ask through here.
 */
import { native } from '../native.js';
import { decodeBody } from '../protocol/frame.js';
import { decodeError, decodeReply, encodeRequest, type FdsReply, type RequestOf } from '../protocol/messages.js';

/** What an fds ask names (the session token, segments, the fast path, the ring). */
export type FdsAsk = Omit<RequestOf<'fds'>, 'rid' | 't'>;

/**
 * The store's checked answer and the fds it sent, in its order. The caller
 * owns the fds and closes them; on a refusal or a malformed answer none is
 * left open and the store's error (or ERR_PROTOCOL) is thrown.
 */
export async function askFds(socketPath: string, ask: FdsAsk): Promise<{ reply: FdsReply; fds: number[] }> {
  const { data, fds } = await native.requestFds(socketPath, encodeRequest(0, { t: 'fds', ...ask }), 10_000);
  try {
    const { header } = decodeBody(data);
    if (header.t === 'err') throw decodeError(header);
    return { reply: decodeReply('fds', header), fds };
  } catch (e) {
    for (const fd of fds) native.closeFd(fd);
    throw e;
  }
}
