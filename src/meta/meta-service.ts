/**
 * The metadata service: what a store publishes so that other stores (and the
 * scheduler) can find it and its objects. One interface, two backends:
 * LocalMeta (one node, in memory, the default) and EtcdMeta (a cluster).
 *
 * What lives here: instances (with liveness), persisted objects' records,
 * names. What never lives here: object bytes.
 */
import type { TrellisError } from '../errors.js';
import type { GlobalObject, InstanceInfo } from '../protocol/records.js';

export interface MetaService {
  readonly kind: 'local' | 'etcd';
  /** Registers this store and resolves with its cluster-wide instance id. */
  register(info: Omit<InstanceInfo, 'instanceId' | 'updatedAt'>): Promise<number>;
  /** Updates this store's published figures (memory, endpoint). */
  updateInstance(patch: Partial<Omit<InstanceInfo, 'instanceId'>>): Promise<void>;
  /** Live instances. */
  instances(): Promise<InstanceInfo[]>;
  /** Live instances from the backend's cached view (no round trip; may lag by a watch event). */
  cachedInstances(): InstanceInfo[];
  /** Whether an instance is live, from the backend's cached view (no round trip). */
  isAlive(instanceId: number): boolean;
  /** Publishes object records, batched. */
  putObjects(objects: GlobalObject[]): Promise<void>;
  getObjects(ids: string[]): Promise<(GlobalObject | undefined)[]>;
  listObjects(filter: { typename?: string; instanceId?: number; limit: number }): Promise<GlobalObject[]>;
  /** Removes object records and every name bound to them. */
  deleteObjects(ids: string[]): Promise<void>;
  /** Binds a name; returns the id it was bound to before, if any. ERR_OBJECT_EXISTS unless overwrite. */
  putName(name: string, id: string, overwrite: boolean): Promise<string | undefined>;
  getName(name: string): Promise<string | undefined>;
  /** Resolves when the name exists; ERR_TIMEOUT after timeoutMs (0: no limit). */
  waitName(name: string, timeoutMs: number, owner: number): Promise<string>;
  cancelWaiters(owner: number | null, error: TrellisError): void;
  dropName(name: string): Promise<string>;
  /** Built with nameListing (protocol/records.ts): any string, `__proto__` too, is a key. */
  listNames(prefix: string): Promise<Record<string, string>>;
  /** Called after the backend had to register this store again (lease lost, etcd restarted). */
  onReregistered: () => void;
  /** Figures for status. */
  describe(): Record<string, unknown>;
  close(): Promise<void>;
}
