import { type ConnectOptions, TrellisClient } from './client.js';

/**
 * Connects to a local store over its UNIX socket. The client maps the store's
 * shared memory, so `get` returns views with no copy.
 *
 * @example
 *   const client = await connect({ socket: '/tmp/trellis.sock' });
 */
export function connect(opts: ConnectOptions = {}): Promise<TrellisClient> {
  return TrellisClient.open(opts);
}
