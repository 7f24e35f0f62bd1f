/**
 * Stores that serve RPC, in this process or in a child process, and raw TCP
 * connections that speak (or break) the RPC protocol.
 */
import { join } from 'node:path';
import { type StoreOptions, StoreServer, startRpc } from 'trellis/store';
import { encodeFrame } from '../../dist/src/protocol/frame.js';
import { RPC_VERSION } from '../../dist/src/protocol/rpc-messages.js';
import { tempDir } from './store.js';

export const TOKEN = 'test-rpc-token-0123456789abcdef';
export const MIB = 1024 * 1024;

export interface RpcStore {
  store: StoreServer;
  socket: string;
  /** 'host:port' of its RPC endpoint. */
  rpc: string;
  endpoint: { host: string; port: number };
  stop: () => Promise<void>;
}

/** An in-process store serving RPC on `host` (a loopback address), with its own socket and arena. */
export async function startRpcStore(host: string, opts: Partial<StoreOptions> = {}): Promise<RpcStore> {
  const { dir, cleanup } = tempDir('trellis-rpc-');
  const socket = join(dir, 'store.sock');
  const store = await StoreServer.start(
    { socket, size: 256 * MIB, rpcPort: 0, rpcHost: host, token: TOKEN, ...opts },
    startRpc,
  );
  const endpoint = store.rpcAddress!;
  return {
    store,
    socket,
    endpoint,
    rpc: `${endpoint.host}:${endpoint.port}`,
    stop: async () => {
      await store.close();
      cleanup();
    },
  };
}

/** A well-formed RPC frame (headers only: bytes travel as raw parts after it). */
export function rpcFrame(header: Record<string, unknown>): Buffer {
  return encodeFrame(header);
}

export function helloFrame(token: unknown = TOKEN, rid = 1): Buffer {
  return encodeFrame({ t: 'hello', rid, version: RPC_VERSION, token, client: 'raw test connection' });
}
