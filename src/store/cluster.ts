/**
 * What a store does with the metadata service: persisting objects, names
 * (cluster-wide with etcd), datasets whose shards live on several stores,
 * finding where objects are, telling "remote" from "lost", and publishing
 * everything again after the backend lost this store's registration.
 */
import { TrellisError } from '../errors.js';
import type { MetaService } from '../meta/meta-service.js';
import type {
  GlobalObject,
  GlobalObjectInfo,
  InstanceInfo,
  InstanceShare,
  Locations,
  ReplicaSet,
  RpcEndpoint,
  ShardLocation,
} from '../protocol/records.js';
import type { IdAllocator } from './ids.js';
import type { Entry, ObjectTable } from './object-table.js';
import { Replication, type ReplicationLink } from './replication.js';

export const DATASET_TYPENAME = 'Dataset';

/**
 * What the cluster needs of migration, which lives with the RPC side
 * (src/store/migrate.ts) and is linked in when the store serves RPC.
 */
export interface MigrationLink extends ReplicationLink {
  /** Copies a remote object here, one transfer however many ask at once; resolves with the local id. */
  pull(endpoint: RpcEndpoint, remoteId: string): Promise<string>;
  /** The local copy of a remote object migrated here, while it exists. */
  copyOf(remoteId: string): string | undefined;
}

export class Cluster {
  /** Names this store bound, to publish again after a re-registration. */
  private readonly boundNames = new Map<string, string>();
  /** Global records this store created (datasets), to publish again after a re-registration. */
  private readonly created = new Map<string, GlobalObject>();
  private link: MigrationLink | null = null;
  /** Copies of replicated objects: placement, the `replicate` request, deleting every copy. */
  readonly replication: Replication;

  constructor(
    readonly meta: MetaService,
    private readonly table: ObjectTable,
    private readonly ids: IdAllocator,
    readonly instanceId: number,
  ) {
    this.replication = new Replication(meta, table, instanceId);
    this.replication.attach(null, this.replicationHost());
  }

  private replicationHost() {
    return {
      persist: (ids: string[]) => this.persist(ids),
      unpublished: (ids: string[]) => this.unpublished(ids),
      deleteLocal: async (id: string) => {
        await this.unpublish(this.table.delete([id], true));
      },
    };
  }

  /** Links migration in (the RPC side does, when the store serves RPC). */
  setMigration(link: MigrationLink): void {
    this.link = link;
    this.replication.attach(link, this.replicationHost());
  }

  /** How this store migrates objects here, or null when it serves no RPC. */
  get migration(): MigrationLink | null {
    return this.link;
  }

  private record(e: Entry): GlobalObject {
    return {
      id: e.id,
      typename: e.typename,
      nbytes: e.nbytes,
      meta: e.meta,
      members: e.members,
      instanceId: this.instanceId,
      global: false,
      persistedAt: Date.now(),
    };
  }

  /**
   * Publishes local objects and everything under them, in one batch; with
   * `replicas`, then has that many copies of each kept on distinct stores.
   */
  async persist(ids: string[], replicas?: number): Promise<void> {
    await this.publish(ids);
    if (replicas !== undefined) await this.replication.ensure(ids, replicas);
  }

  private async publish(ids: string[]): Promise<void> {
    const local = ids.filter((id) => this.table.has(id));
    const remote = ids.filter((id) => !this.table.has(id));
    if (remote.length > 0) {
      // Already published by someone (e.g. a dataset, or another store's object): fine, if it exists.
      const recs = await this.meta.getObjects(remote);
      recs.forEach((r, i) => {
        if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${remote[i]} does not exist`);
      });
    }
    const { records, written } = this.unpublished(local);
    if (records.length === 0) return;
    await this.meta.putObjects(records);
    written();
  }

  /**
   * The records publishing these local objects would write (everything under
   * them not published yet), and what marks them published once written.
   */
  private unpublished(ids: string[]): { records: GlobalObject[]; written: () => void } {
    const todo: Entry[] = [];
    for (const id of ids) for (const e of this.table.tree(id)) if (!e.persisted) todo.push(e);
    return {
      records: todo.map((e) => this.record(e)),
      written: () => {
        for (const e of todo) e.persisted = true;
      },
    };
  }

  /** Binds a name cluster-wide; a local object is persisted first so every node can resolve it. */
  async putName(name: string, id: string, overwrite: boolean): Promise<void> {
    if (this.table.has(id)) {
      const e = this.table.lookup(id);
      if (!e.sealed) throw new TrellisError('ERR_NOT_SEALED', `${id} is not sealed`);
      await this.persist([id]);
    } else {
      const [rec] = await this.meta.getObjects([id]);
      if (!rec) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    }
    await this.meta.putName(name, id, overwrite);
    this.boundNames.set(name, id);
  }

  async checkNameFree(name: string): Promise<void> {
    const prev = await this.meta.getName(name);
    if (prev !== undefined)
      throw new TrellisError('ERR_OBJECT_EXISTS', `name ${JSON.stringify(name)} is bound to ${prev}`);
  }

  async dropName(name: string): Promise<string> {
    const id = await this.meta.dropName(name);
    this.boundNames.delete(name);
    return id;
  }

  /** After local deletes: withdraw what was published. */
  async unpublish(deleted: Entry[]): Promise<void> {
    const ids = deleted.filter((e) => e.persisted).map((e) => e.id);
    if (ids.length === 0) return;
    // First: a replicated object's copies elsewhere are found through its replica set, which goes with its record.
    await this.replication.deleted(ids);
    await this.meta.deleteObjects(ids);
    for (const [n, id] of this.boundNames) if (ids.includes(id)) this.boundNames.delete(n);
  }

  /** Deletes records that exist only in the metadata service (datasets). */
  async deleteGlobal(ids: string[]): Promise<void> {
    const recs = await this.meta.getObjects(ids);
    const sets = await this.meta.getReplicaSets(ids);
    recs.forEach((r, i) => {
      if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${ids[i]} does not exist`);
      if (!r.global && !sets[i]) throw this.notHere(r);
    });
    // A replicated object may be deleted from any store: every copy goes, wherever it is.
    const replicated = ids.filter((_, i) => sets[i] !== undefined);
    if (replicated.length > 0) await this.replication.deleteEveryCopy(replicated);
    const global = ids.filter((_, i) => sets[i] === undefined);
    if (global.length > 0) await this.meta.deleteObjects(global);
    for (const id of ids) this.created.delete(id);
  }

  /** The error for an id that is not in this store: remote, lost, or unknown. */
  async whyMissing(id: string): Promise<TrellisError> {
    const [rec] = await this.meta.getObjects([id]);
    if (!rec) return new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    await this.confirmLiveness(rec.instanceId);
    const [set] = rec.global ? [undefined] : await this.meta.getReplicaSets([id]);
    if (!set) return this.notHere(rec);
    const here = this.replication.localCopy(id);
    if (here !== undefined) {
      return new TrellisError(
        'ERR_OBJECT_REMOTE',
        `object ${id} has a replica on this store: ${here} (migrate(${id}) returns it)`,
      );
    }
    const live = this.replication.liveness(set).filter((c) => c.alive);
    if (live.length === 0) {
      return new TrellisError('ERR_OBJECT_LOST', `object ${id}: every store that held a copy of it is gone`);
    }
    return new TrellisError(
      'ERR_OBJECT_REMOTE',
      `object ${id} has copies on instances ${live.map((c) => c.instanceId).join(', ')}; migrate it here or read it over RPC`,
    );
  }

  /** Persisted objects cluster-wide, each with whether its store is alive. */
  async listGlobal(filter: { typename?: string; instanceId?: number; limit: number }): Promise<GlobalObjectInfo[]> {
    const objects = await this.meta.listObjects(filter);
    if (objects.some((o) => !o.global && !this.meta.isAlive(o.instanceId))) await this.meta.instances();
    return objects.map((o) => ({ ...o, alive: o.global || this.meta.isAlive(o.instanceId) }));
  }

  /** The cached view may lag a store that just registered: ask once more before calling it gone. */
  private async confirmLiveness(instanceId: number): Promise<void> {
    if (!this.meta.isAlive(instanceId)) await this.meta.instances();
  }

  private notHere(rec: GlobalObject): TrellisError {
    if (rec.global) {
      return new TrellisError(
        'ERR_BAD_REQUEST',
        `${rec.id} is a ${rec.typename} whose members live on several stores; use locate() and get its shards`,
      );
    }
    if (rec.instanceId === this.instanceId) {
      return new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${rec.id} was deleted`);
    }
    if (!this.meta.isAlive(rec.instanceId)) {
      return new TrellisError('ERR_OBJECT_LOST', `object ${rec.id} lived on instance ${rec.instanceId}, which is gone`);
    }
    const copy = this.link?.copyOf(rec.id);
    if (copy !== undefined) {
      return new TrellisError(
        'ERR_OBJECT_REMOTE',
        `object ${rec.id} lives on instance ${rec.instanceId}; its copy here is ${copy}`,
      );
    }
    return new TrellisError(
      'ERR_OBJECT_REMOTE',
      `object ${rec.id} lives on instance ${rec.instanceId}; migrate it here or read it over RPC`,
    );
  }

  /** A dataset: a global object whose members (shards) may live on any store. */
  async createDataset(
    name: string | undefined,
    members: string[],
    meta: Record<string, unknown>,
    replicas?: number,
  ): Promise<string> {
    if (name !== undefined) await this.checkNameFree(name);
    const local = members.filter((m) => this.table.has(m));
    await this.publish(local);
    const recs = await this.meta.getObjects(members);
    for (const r of recs) if (r && !r.global) await this.confirmLiveness(r.instanceId);
    const sets = await this.meta.getReplicaSets(members);
    let nbytes = 0;
    recs.forEach((r, i) => {
      if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `shard ${members[i]} does not exist (persist it first)`);
      const set = sets[i];
      const alive =
        this.meta.isAlive(r.instanceId) || (set !== undefined && this.replication.liveness(set).some((c) => c.alive));
      if (!r.global && !alive) {
        throw new TrellisError('ERR_OBJECT_LOST', `shard ${r.id} lived on instance ${r.instanceId}, which is gone`);
      }
      nbytes += r.nbytes;
    });
    if (replicas !== undefined) await this.replication.ensure(members, replicas);
    const id = this.ids.allocate();
    const rec: GlobalObject = {
      id,
      typename: DATASET_TYPENAME,
      nbytes,
      meta,
      members: members.slice(),
      instanceId: this.instanceId,
      global: true,
      persistedAt: Date.now(),
    };
    await this.meta.putObjects([rec]);
    this.created.set(id, rec);
    if (name !== undefined) {
      await this.meta.putName(name, id, false);
      this.boundNames.set(name, id);
    }
    return id;
  }

  /** Which instances hold which shards of an object (a dataset, or any persisted object). */
  async locate(idOrName: { id?: string; name?: string }): Promise<Locations> {
    let id = idOrName.id;
    if (id === undefined) {
      id = await this.meta.getName(idOrName.name!);
      if (id === undefined)
        throw new TrellisError('ERR_NAME_NOT_FOUND', `no object is named ${JSON.stringify(idOrName.name)}`);
    }
    const [root] = await this.meta.getObjects([id]);
    if (!root) {
      if (this.table.has(id)) throw new TrellisError('ERR_BAD_REQUEST', `${id} is not persisted; persist it first`);
      throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    }
    const shardRecs = root.global ? await this.meta.getObjects(root.members) : [root];
    const sets = await this.meta.getReplicaSets(shardRecs.map((r, i) => r?.id ?? root.members[i]));
    const instances = new Map<number, InstanceInfo>();
    for (const r of shardRecs) if (r && !r.global) await this.confirmLiveness(r.instanceId);
    for (const i of this.meta.cachedInstances()) instances.set(i.instanceId, i);
    const shards: ShardLocation[] = shardRecs.map((r, i) => {
      if (!r)
        return { id: root.members[i], typename: 'unknown', nbytes: 0, instanceId: -1, alive: false, replicas: [] };
      const alive = this.meta.isAlive(r.instanceId);
      const set = sets[i];
      return {
        id: r.id,
        typename: r.typename,
        nbytes: r.nbytes,
        instanceId: r.instanceId,
        alive,
        replicas: set ? this.replication.liveness(set) : [{ id: r.id, instanceId: r.instanceId, alive }],
      };
    });
    const shares = new Map<number, InstanceShare>();
    for (const s of shards) {
      if (s.instanceId < 0) continue;
      let sh = shares.get(s.instanceId);
      if (!sh) {
        const info = instances.get(s.instanceId);
        sh = {
          instanceId: s.instanceId,
          name: info?.name ?? '',
          hostname: info?.hostname ?? '',
          rpc: info?.rpc ?? null,
          alive: s.alive,
          shards: [],
          bytes: 0,
        };
        shares.set(s.instanceId, sh);
      }
      sh.shards.push(s.id);
      sh.bytes += s.nbytes;
    }
    return {
      id: root.id,
      typename: root.typename,
      nbytes: root.nbytes,
      shards,
      instances: [...shares.values()].sort((a, b) => b.bytes - a.bytes),
    };
  }

  /**
   * Finds the store that owns a persisted object and copies the object here
   * through the migration link (which runs one transfer however many ask at
   * once), returning the local id.
   */
  async migrate(id: string): Promise<string> {
    const here = this.replication.localCopy(id);
    if (here !== undefined) return here;
    const [rec] = await this.meta.getObjects([id]);
    if (!rec) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    if (rec.global) throw this.notHere(rec);
    const [set] = await this.meta.getReplicaSets([id]);
    if (set) return this.migrateReplicated(set);
    if (rec.instanceId === this.instanceId) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} was deleted`);
    await this.confirmLiveness(rec.instanceId);
    if (!this.meta.isAlive(rec.instanceId)) throw this.notHere(rec);
    const owner = (await this.meta.instances()).find((i) => i.instanceId === rec.instanceId);
    if (!owner) throw this.notHere(rec);
    if (!owner.rpc) {
      throw new TrellisError('ERR_UNSUPPORTED', `instance ${rec.instanceId} serves no RPC endpoint to migrate from`);
    }
    if (!this.link) throw new TrellisError('ERR_UNSUPPORTED', 'this store has no RPC client configured (token)');
    return this.link.pull(owner.rpc, id);
  }

  /**
   * A replicated object from the nearest live copy: one migrated here
   * before, else one on this host, else the first live one; the next when
   * a transfer fails.
   */
  private async migrateReplicated(set: ReplicaSet): Promise<string> {
    if (!this.link) throw new TrellisError('ERR_UNSUPPORTED', 'this store has no RPC client configured (token)');
    const instances = await this.meta.instances();
    const byId = new Map(instances.map((i) => [i.instanceId, i]));
    const live = this.replication.liveness(set).filter((c) => c.alive && byId.get(c.instanceId)?.rpc);
    for (const c of live) {
      const copy = this.link.copyOf(c.id);
      if (copy !== undefined) return copy;
    }
    if (live.length === 0) {
      throw new TrellisError('ERR_OBJECT_LOST', `object ${set.id}: every store that held a copy of it is gone`);
    }
    const mine = byId.get(this.instanceId)?.hostname;
    live.sort(
      (a, b) => Number(byId.get(b.instanceId)?.hostname === mine) - Number(byId.get(a.instanceId)?.hostname === mine),
    );
    let last: unknown;
    for (const c of live) {
      try {
        return await this.link.pull(byId.get(c.instanceId)!.rpc!, c.id);
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  /** Publishes every persisted object and every name this store bound, again. */
  async republish(): Promise<void> {
    const records = [...this.table.persistedEntries().map((e) => this.record(e)), ...this.created.values()];
    if (records.length > 0) await this.meta.putObjects(records);
    for (const [name, id] of this.boundNames) {
      try {
        await this.meta.putName(name, id, false);
      } catch (e) {
        // Someone else took the name while we were away: theirs stands.
        if (!(e instanceof TrellisError && e.code === 'ERR_OBJECT_EXISTS')) throw e;
        this.boundNames.delete(name);
      }
    }
  }
}
