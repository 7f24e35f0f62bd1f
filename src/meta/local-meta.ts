/**
 * The single-node metadata backend: everything in this process's memory.
 * This store is the only instance, and every persisted object is its own.
 */
import { TrellisError } from '../errors.js';
import type { GlobalObject, InstanceInfo, ReplicaSet } from '../protocol/records.js';
import type { MetaService, ReplicaSetChange } from './meta-service.js';
import { NameTable } from './names.js';

export class LocalMeta implements MetaService {
  readonly kind = 'local' as const;
  private info: InstanceInfo | null = null;
  private readonly objects = new Map<string, GlobalObject>();
  private readonly replicaSets = new Map<string, ReplicaSet>();
  private readonly names = new NameTable();
  private readonly namesByObject = new Map<string, Set<string>>();
  onReregistered: () => void = () => {};

  constructor(private readonly instanceId = 0) {}

  async register(info: Omit<InstanceInfo, 'instanceId' | 'updatedAt'>): Promise<number> {
    this.info = { ...info, instanceId: this.instanceId, updatedAt: Date.now() };
    return this.instanceId;
  }

  async updateInstance(patch: Partial<Omit<InstanceInfo, 'instanceId'>>): Promise<void> {
    if (this.info) this.info = { ...this.info, ...patch, updatedAt: Date.now() };
  }

  async instances(): Promise<InstanceInfo[]> {
    return this.info ? [this.info] : [];
  }

  cachedInstances(): InstanceInfo[] {
    return this.info ? [this.info] : [];
  }

  isAlive(instanceId: number): boolean {
    return instanceId === this.instanceId;
  }

  async putObjects(objects: GlobalObject[]): Promise<void> {
    for (const o of objects) this.objects.set(o.id, o);
  }

  async getObjects(ids: string[]): Promise<(GlobalObject | undefined)[]> {
    return ids.map((id) => this.objects.get(id));
  }

  async listObjects(filter: { typename?: string; instanceId?: number; limit: number }): Promise<GlobalObject[]> {
    const out: GlobalObject[] = [];
    for (const o of this.objects.values()) {
      if (out.length >= filter.limit) break;
      if (filter.typename !== undefined && o.typename !== filter.typename) continue;
      if (filter.instanceId !== undefined && o.instanceId !== filter.instanceId) continue;
      out.push(o);
    }
    return out;
  }

  async getReplicaSets(ids: string[]): Promise<(ReplicaSet | undefined)[]> {
    return ids.map((id) => this.replicaSets.get(id));
  }

  async listReplicaSets(): Promise<ReplicaSet[]> {
    return [...this.replicaSets.values()];
  }

  async updateReplicaSet(
    id: string,
    change: ReplicaSetChange,
    records: GlobalObject[] = [],
  ): Promise<ReplicaSet | undefined> {
    const next = change(this.replicaSets.get(id));
    if (next === null) this.replicaSets.delete(id);
    else if (next !== undefined) {
      this.replicaSets.set(id, next);
      for (const o of records) this.objects.set(o.id, o);
    }
    return this.replicaSets.get(id);
  }

  /** One store, so the lock is always its own. */
  async holdLock(_name: string): Promise<number | undefined> {
    return this.instanceId;
  }

  async deleteObjects(ids: string[]): Promise<void> {
    for (const id of ids) {
      this.objects.delete(id);
      this.replicaSets.delete(id);
      const names = this.namesByObject.get(id);
      if (names) {
        for (const n of names) if (this.names.get(n) === id) this.names.forget([n]);
        this.namesByObject.delete(id);
      }
    }
  }

  async putName(name: string, id: string, overwrite: boolean): Promise<string | undefined> {
    const prev = this.names.put(name, id, overwrite);
    if (prev !== undefined && prev !== id) this.namesByObject.get(prev)?.delete(name);
    let set = this.namesByObject.get(id);
    if (!set) {
      set = new Set();
      this.namesByObject.set(id, set);
    }
    set.add(name);
    return prev;
  }

  async getName(name: string): Promise<string | undefined> {
    return this.names.get(name);
  }

  waitName(name: string, timeoutMs: number, owner: number): Promise<string> {
    return this.names.wait(name, timeoutMs, owner);
  }

  cancelWaiters(owner: number | null, error: TrellisError): void {
    this.names.cancelWaiters(owner, error);
  }

  async dropName(name: string): Promise<string> {
    const id = this.names.drop(name);
    this.namesByObject.get(id)?.delete(name);
    return id;
  }

  async listNames(prefix: string): Promise<Record<string, string>> {
    return this.names.list(prefix);
  }

  describe(): Record<string, unknown> {
    return { backend: 'local', objects: this.objects.size, names: this.names.size, nameWaiters: this.names.waiting };
  }

  async close(): Promise<void> {
    this.names.cancelWaiters(null, new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down'));
  }
}
