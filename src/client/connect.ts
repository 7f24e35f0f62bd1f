import { type ConnectOptions, TrellisClient } from './client.js';
import { RemoteClient, type RemoteConnectOptions } from './remote-client.js';
import type { StoreClient } from './store-client.js';

/**
 * Connects to a store. With `socket` (or nothing: $TRELLIS_SOCKET,
 * /tmp/trellis.sock) the client talks to its node's store over the UNIX
 * socket and maps its shared memory, so `get` returns views with no copy.
 * With `rpc: 'host:port'` and the cluster's token (or $TRELLIS_TOKEN) it
 * talks to a store on any machine over TCP, with the same interface, and
 * `get` and `put` copy.
 *
 * @example
 *   const local = await connect({ socket: '/tmp/trellis.sock' });
 *   const remote = await connect({ rpc: '10.0.0.2:7000', token });
 */
export function connect(opts?: ConnectOptions): Promise<TrellisClient>;
export function connect(opts: RemoteConnectOptions): Promise<RemoteClient>;
export function connect(opts: ConnectOptions | RemoteConnectOptions): Promise<StoreClient>;
export function connect(opts: ConnectOptions | RemoteConnectOptions = {}): Promise<StoreClient> {
  if ('rpc' in opts && opts.rpc !== undefined) return RemoteClient.open(opts);
  return TrellisClient.open(opts as ConnectOptions);
}
