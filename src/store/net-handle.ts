/**
 * The one module that touches net's private `_handle` (Node offers no public
 * way to do either thing here); both uses check what they find and tell the
 * caller when they cannot, so it falls back (test/net-handle.test.ts).
 *
 * The fd of a socket: the fd channel sends segment fds with sendmsg on the
 * accepted socket's own descriptor. Without one, the fds request is refused.
 *
 * Reads that land where the reader wants them. net's `onread` option makes a
 * socket read into buffers its owner picks (the rest of an arena blob, say)
 * instead of fresh 64 KiB chunks that must then be copied; Node offers it on
 * sockets it connects, not on the ones a server accepts. A server created
 * with `pauseOnConnect` hands over sockets that have not read a byte yet, so
 * their handle can be wrapped again in a Socket that has `onread`, and the
 * first wrapper retired (it still counts as one of the server's connections
 * until destroyed). When that cannot be done the caller falls back to 'data'
 * events.
 */
import { Socket } from 'node:net';

export interface OnRead {
  /** Where the next read lands; called after every read. Never empty. */
  buffer: () => Uint8Array;
  /** `n` bytes were read into `buf` (the buffer last returned). */
  callback: (n: number, buf: Uint8Array) => boolean | undefined;
}

interface HandleHolder {
  _handle?: { readStart?: unknown; reading?: boolean; fd?: unknown } | null;
}

/** The file descriptor under `socket`, or null when it has none that can be used. */
export function socketFd(socket: Socket): number | null {
  const fd = (socket as unknown as HandleHolder)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/** The accepted (paused) socket, rewrapped to read through `onread`; null if that cannot be done. */
export function adoptWithOnread(accepted: Socket, onread: OnRead): Socket | null {
  const holder = accepted as unknown as HandleHolder;
  const handle = holder._handle;
  if (!handle || typeof handle.readStart !== 'function' || handle.reading) return null;
  let adopted: Socket;
  try {
    adopted = new Socket({ handle, readable: true, writable: true, onread } as ConstructorParameters<typeof Socket>[0]);
  } catch {
    return null;
  }
  holder._handle = null;
  accepted.destroy();
  return adopted;
}
