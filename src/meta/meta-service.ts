/**
 * The metadata service: what a store publishes so that other stores (and the
 * scheduler) can find it and its objects. One interface, two backends:
 * LocalMeta (one node, in memory, the default) and EtcdMeta (a cluster).
 *
 * What lives here: instances (with liveness), persisted objects' records,
 * names. What never lives here: object bytes.
 */
import type { TrellisError } from '../errors.js';
import type { GlobalObject, InstanceInfo, ReplicaSet } from '../protocol/records.js';

/**
 * How a replica set changes: given the set as it is now (undefined: none),
 * the next set, null to delete it, or undefined to leave it as it is.
 */
export type ReplicaSetChange = (current: ReplicaSet | undefined) => ReplicaSet | null | undefined;

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
  /** The replica sets of these objects (undefined: not replicated), read from the backend. */
  getReplicaSets(ids: string[]): Promise<(ReplicaSet | undefined)[]>;
  /** Every replica set (repair scans them). */
  listReplicaSets(): Promise<ReplicaSet[]>;
  /**
   * Changes one replica set atomically: `change` sees the set as stored and
   * says what it becomes; when another writer got in between, it runs again
   * on the newer set (etcd: a transaction comparing the key's version).
   * Resolves with the set as written (undefined: none). `records` are
   * published in the same transaction when the change writes the set, and
   * only then (a new copy's records go with its entry in the set).
   */
  updateReplicaSet(id: string, change: ReplicaSetChange, records?: GlobalObject[]): Promise<ReplicaSet | undefined>;
  /**
   * Takes, or keeps, the lock `name`, held by this store's registration (it
   * goes when the store's lease does). Resolves with the instance holding it
   * now (this one when it got it), or undefined when nobody could be asked.
   */
  holdLock(name: string): Promise<number | undefined>;
  /** Removes object records, their replica sets and every name bound to them. */
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
