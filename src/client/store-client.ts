/**
 * What every Trellis client offers, whichever way it reaches the store:
 * `TrellisClient` over the node's UNIX socket (get returns views over shared
 * memory) and `RemoteClient` over TCP (get returns copies). `connect()`
 * returns one or the other; code written against this interface runs on both.
 *
 * Over RPC, `createBlob`, `createTensor` and `getSync` fail with
 * ERR_UNSUPPORTED: they hand out shared memory, which a remote client has not.
 */

import type { ArrayOf, DType } from '../codecs/tensor.js';
import type { PutValue, StoreValue } from '../codecs/value.js';
import type { GlobalObjectInfo, InstanceInfo, Locations, ObjectSummary, StoreStatus } from '../protocol/records.js';
import type { BlobWriter, ObjectSpecInput, PutOptions, TensorWriter, TrellisClient } from './client.js';

export interface StoreClient extends AsyncDisposable {
  /**
   * How this client reaches its store: 'ipc' (TrellisClient, views over
   * shared memory) or 'rpc' (RemoteClient, copies). Code that hands out
   * shared memory checks this instead of probing for members.
   */
  readonly transport: 'ipc' | 'rpc';
  /** The store's random id for this run. */
  readonly storeId: string;
  /** The store's instance id (the top 16 bits of its object ids). */
  readonly instanceId: number;

  put(value: PutValue, opts?: PutOptions): Promise<string>;
  putBlob(bytes: Uint8Array, opts?: PutOptions): Promise<string>;
  putObject(spec: ObjectSpecInput, opts?: PutOptions): Promise<string>;
  createBlob(nbytes: number): Promise<BlobWriter>;
  createTensor<D extends DType>(dtype: D, shape: number[]): Promise<TensorWriter<ArrayOf<D>>>;

  get(id: string): Promise<StoreValue>;
  getMany(ids: string[]): Promise<StoreValue[]>;
  getSync(id: string): StoreValue | undefined;
  getBlob(id: string): Promise<Uint8Array>;
  release(id: string): Promise<void>;
  delete(ids: string | string[], opts?: { deep?: boolean }): Promise<void>;

  putName(name: string, id: string, opts?: { overwrite?: boolean }): Promise<void>;
  getName(name: string, opts?: { wait?: boolean; timeoutMs?: number }): Promise<string>;
  dropName(name: string): Promise<void>;
  listNames(prefix?: string): Promise<Record<string, string>>;
  list(opts?: { typename?: string; limit?: number }): Promise<ObjectSummary[]>;
  listPage(opts?: {
    typename?: string;
    limit?: number;
    cursor?: string;
  }): Promise<{ objects: ObjectSummary[]; next?: string }>;
  status(): Promise<StoreStatus>;

  persist(ids: string | string[], opts?: { replicas?: number }): Promise<void>;
  migrate(id: string): Promise<string>;
  instances(): Promise<InstanceInfo[]>;
  listGlobal(opts?: { typename?: string; instanceId?: number; limit?: number }): Promise<GlobalObjectInfo[]>;
  createDataset(
    name: string | undefined,
    shards: string[],
    opts?: { meta?: Record<string, unknown>; replicas?: number },
  ): Promise<string>;
  locate(idOrName: string): Promise<Locations>;

  close(): Promise<void>;
}

/** Compile-time check that the IPC client keeps up with the interface. */
export type IpcClientSatisfies = TrellisClient extends StoreClient ? true : never;
const _ipcClientSatisfies: IpcClientSatisfies = true;
void _ipcClientSatisfies;
