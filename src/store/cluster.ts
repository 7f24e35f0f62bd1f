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
  RpcEndpoint,
  ShardLocation,
} from '../protocol/records.js';
import type { IdAllocator } from './ids.js';
import type { Entry, ObjectTable } from './object-table.js';

export const DATASET_TYPENAME = 'Dataset';

/**
 * What the cluster needs of migration, which lives with the RPC side
 * (src/store/migrate.ts) and is linked in when the store serves RPC.
 */
export interface MigrationLink {
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

  constructor(
    readonly meta: MetaService,
    private readonly table: ObjectTable,
    private readonly ids: IdAllocator,
    readonly instanceId: number,
  ) {}

  /** Links migration in (the RPC side does, when the store serves RPC). */
  setMigration(link: MigrationLink): void {
    this.link = link;
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

  /** Publishes local objects and everything under them, in one batch. */
  async persist(ids: string[]): Promise<void> {
    const todo: Entry[] = [];
    const local = ids.filter((id) => this.table.has(id));
    const remote = ids.filter((id) => !this.table.has(id));
    if (remote.length > 0) {
      // Already published by someone (e.g. a dataset, or another store's object): fine, if it exists.
      const recs = await this.meta.getObjects(remote);
      recs.forEach((r, i) => {
        if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${remote[i]} does not exist`);
      });
    }
    for (const id of local) for (const e of this.table.tree(id)) if (!e.persisted) todo.push(e);
    if (todo.length === 0) return;
    await this.meta.putObjects(todo.map((e) => this.record(e)));
    for (const e of todo) e.persisted = true;
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
    await this.meta.deleteObjects(ids);
    for (const [n, id] of this.boundNames) if (ids.includes(id)) this.boundNames.delete(n);
  }

  /** Deletes records that exist only in the metadata service (datasets). */
  async deleteGlobal(ids: string[]): Promise<void> {
    const recs = await this.meta.getObjects(ids);
    recs.forEach((r, i) => {
      if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${ids[i]} does not exist`);
      if (!r.global) throw this.notHere(r);
    });
    await this.meta.deleteObjects(ids);
    for (const id of ids) this.created.delete(id);
  }

  /** The error for an id that is not in this store: remote, lost, or unknown. */
  async whyMissing(id: string): Promise<TrellisError> {
    const [rec] = await this.meta.getObjects([id]);
    if (!rec) return new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    await this.confirmLiveness(rec.instanceId);
    return this.notHere(rec);
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
  async createDataset(name: string | undefined, members: string[], meta: Record<string, unknown>): Promise<string> {
    if (name !== undefined) await this.checkNameFree(name);
    const local = members.filter((m) => this.table.has(m));
    await this.persist(local);
    const recs = await this.meta.getObjects(members);
    for (const r of recs) if (r && !r.global) await this.confirmLiveness(r.instanceId);
    let nbytes = 0;
    recs.forEach((r, i) => {
      if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `shard ${members[i]} does not exist (persist it first)`);
      if (!r.global && !this.meta.isAlive(r.instanceId)) {
        throw new TrellisError('ERR_OBJECT_LOST', `shard ${r.id} lived on instance ${r.instanceId}, which is gone`);
      }
      nbytes += r.nbytes;
    });
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
    const instances = new Map<number, InstanceInfo>();
    for (const r of shardRecs) if (r && !r.global) await this.confirmLiveness(r.instanceId);
    for (const i of this.meta.cachedInstances()) instances.set(i.instanceId, i);
    const shards: ShardLocation[] = shardRecs.map((r, i) => {
      if (!r) return { id: root.members[i], typename: 'unknown', nbytes: 0, instanceId: -1, alive: false };
      return {
        id: r.id,
        typename: r.typename,
        nbytes: r.nbytes,
        instanceId: r.instanceId,
        alive: this.meta.isAlive(r.instanceId),
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
    if (this.table.has(id)) return id;
    const [rec] = await this.meta.getObjects([id]);
    if (!rec) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    if (rec.global) throw this.notHere(rec);
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
