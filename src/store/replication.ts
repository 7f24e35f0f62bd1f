/**
 * Replicated objects: full, sealed copies of one persisted object on
 * distinct stores, so the object outlives the loss of any store but its
 * last copy.
 *
 * The copies of an object are its replica set in the metadata service, kept
 * under the object's own id (the id datasets and names refer to). A copy is
 * made by the store that will hold it: asked with `replicate`, it pulls the
 * bytes from a live copy over RPC (migration), persists its copy, and adds
 * it to the set in one transaction that also checks the set still needs it.
 * So however many stores or repairers ask at once, a set never counts more
 * live copies than its factor; a copy that arrives too late is deleted
 * again by the store that made it.
 *
 * Placement prefers the stores with the most free memory (by the figures
 * they publish), never one that already holds a live copy.
 */
import { TrellisError } from '../errors.js';
import type { MetaService } from '../meta/meta-service.js';
import { decodeReply, type RequestBody } from '../protocol/messages.js';
import type {
  GlobalObject,
  InstanceInfo,
  LiveCopy,
  ReplicaCopy,
  ReplicaSet,
  RpcEndpoint,
} from '../protocol/records.js';
import type { ObjectTable } from './object-table.js';
import { Placement } from './replica-placement.js';

/** What replication needs of the store's RPC side. */
export interface ReplicationLink {
  /** Copies a remote object here over RPC; resolves with the local id. */
  pull(endpoint: RpcEndpoint, remoteId: string): Promise<string>;
  /** Sends one request to another store over RPC and resolves with its `ok` answer's header. */
  ask(endpoint: RpcEndpoint, body: RequestBody<'replicate' | 'delete'>): Promise<Record<string, unknown>>;
}

/** What replication needs of the cluster: publishing and withdrawing local objects. */
export interface ReplicationHost {
  persist(ids: string[]): Promise<void>;
  /** The records publishing these local objects would write, and what marks them published once written. */
  unpublished(ids: string[]): { records: GlobalObject[]; written: () => void };
  /** Deletes a local object (deep) and withdraws its record. */
  deleteLocal(id: string): Promise<void>;
}

/**
 * Copies asked for at once by one `ensure`. Enough that a dataset's copies
 * overlap their fixed costs (etcd round trips, the target's persist and
 * transaction) with each other's bytes; the bytes themselves queue on one
 * connection per pair of stores (peer-channels.ts), so this does not
 * multiply the transfers on the wire.
 */
const PARALLEL_COPIES = 16;

export class Replication {
  /** Object id → this store's copy of it, for copies made here. */
  private readonly here = new Map<string, string>();
  /** This store's copy → the object it is a copy of. */
  private readonly rootOf = new Map<string, string>();
  /** Object id → the `replicate` request making a copy of it here now (a second one waits for it). */
  private readonly making = new Map<string, Promise<{ id: string; added: boolean }>>();
  private link: ReplicationLink | null = null;
  private host: ReplicationHost | null = null;

  constructor(
    private readonly meta: MetaService,
    private readonly table: ObjectTable,
    private readonly instanceId: number,
  ) {}

  /** Links the RPC side in (when the store serves RPC) and the cluster. */
  attach(link: ReplicationLink | null, host: ReplicationHost): void {
    if (link) this.link = link;
    this.host = host;
  }

  /** This store's copy of object `id` (the object itself when it is local), while it exists. */
  localCopy(id: string): string | undefined {
    if (this.table.has(id)) return id;
    const c = this.here.get(id);
    return c !== undefined && this.table.has(c) ? c : undefined;
  }

  /** Copies of replicated objects held here now. */
  get copiesHere(): number {
    let n = 0;
    for (const c of this.here.values()) if (this.table.has(c)) n++;
    return n;
  }

  /** The object a local copy is a copy of, if it is one. */
  rootOfCopy(copyId: string): string | undefined {
    return this.rootOf.get(copyId);
  }

  /** The copies of a set with their liveness. */
  liveness(set: ReplicaSet): LiveCopy[] {
    return set.copies.map((c) => ({ ...c, alive: this.meta.isAlive(c.instanceId) }));
  }

  /**
   * Makes sure each object has `factor` live copies on distinct stores:
   * records the factor, then has the missing copies made. Rejects with
   * ERR_REPLICAS_UNAVAILABLE when too few stores could take one.
   */
  async ensure(ids: string[], factor: number): Promise<void> {
    const instances = await this.meta.instances();
    const reachable = instances.filter((i) => i.rpc !== null).length;
    if (factor > reachable) {
      // Refused before anything is recorded: a factor no cluster of this size can meet would stay under-replicated.
      throw new TrellisError(
        'ERR_REPLICAS_UNAVAILABLE',
        `${factor} copies need ${factor} live stores serving RPC; the cluster has ${reachable}`,
      );
    }
    const recs = await this.meta.getObjects(ids);
    for (let i = 0; i < ids.length; i++) {
      const r = recs[i];
      if (!r) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${ids[i]} does not exist`);
      if (r.global) {
        throw new TrellisError(
          'ERR_BAD_REQUEST',
          `${r.id} is a ${r.typename} with no bytes of its own; replicate its shards`,
        );
      }
    }
    // One transaction per set, all at once: each is a round trip to etcd, and the sets are independent.
    const written = await Promise.all(
      recs.map((rec) => {
        const r = rec!;
        return this.meta.updateReplicaSet(r.id, (cur) => {
          if (cur === undefined) {
            const copies = [{ id: r.id, instanceId: r.instanceId }];
            return { id: r.id, factor, nbytes: r.nbytes, copies, updatedAt: Date.now() };
          }
          return cur.factor === factor ? undefined : { ...cur, factor, updatedAt: Date.now() };
        });
      }),
    );
    const sets = written.filter((set): set is ReplicaSet => set !== undefined);
    if (factor <= 1) return;
    const plan = new Placement(instances);
    const work: (() => Promise<void>)[] = [];
    for (const set of sets) {
      const live = this.liveness(set).filter((c) => c.alive);
      if (live.length === 0) throw new TrellisError('ERR_OBJECT_LOST', `object ${set.id}: no copy of it is left`);
      for (let k = live.length; k < factor; k++) {
        // The set as just written: no need to read it again before the first copy.
        work.push(async () => {
          await this.addCopy(set.id, plan, k === live.length ? set : undefined);
        });
      }
    }
    let next = 0;
    const errors: unknown[] = [];
    const run = async () => {
      while (next < work.length) {
        const job = work[next++];
        try {
          await job();
        } catch (e) {
          errors.push(e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_COPIES, work.length) }, run));
    if (errors.length > 0) throw errors[0];
  }

  /**
   * Has one more copy of `id` made on the store with the most room that
   * holds none yet, trying the next one when a store fails. Resolves with
   * the bytes copied (0 when the set needed no copy by then). `known` is
   * the set as its caller just read or wrote it (else it is read here); the
   * target's transaction refuses a copy the set no longer needs either way.
   */
  async addCopy(id: string, plan: Placement, known?: ReplicaSet): Promise<number> {
    const set = known ?? (await this.meta.getReplicaSets([id]))[0];
    if (!set) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} is not replicated`);
    const live = this.liveness(set).filter((c) => c.alive);
    if (live.length >= set.factor) return 0;
    if (live.length === 0) throw new TrellisError('ERR_OBJECT_LOST', `object ${id}: no copy of it is left`);
    const holders = new Set(live.map((c) => c.instanceId));
    const tried: string[] = [];
    for (;;) {
      const target = plan.take(id, set.nbytes, holders);
      if (!target) {
        throw new TrellisError(
          'ERR_REPLICAS_UNAVAILABLE',
          `object ${id} needs ${set.factor} copies on distinct stores; it has ${live.length} and no other live store ` +
            `with room for ${set.nbytes} bytes could take one${tried.length ? ` (${tried.join('; ')})` : ''}`,
        );
      }
      holders.add(target.instanceId);
      // The source: the primary while it lives (its store serves the object anyway), else the first live copy.
      const from = live[0];
      try {
        const a = await this.askReplicate(target, { id, from });
        return a.added ? set.nbytes : 0;
      } catch (e) {
        plan.release(id, target.instanceId, set.nbytes);
        tried.push(`${target.name || `instance ${target.instanceId}`}: ${(e as Error).message}`);
      }
    }
  }

  private async askReplicate(target: InstanceInfo, req: { id: string; from: ReplicaCopy }) {
    if (target.instanceId === this.instanceId) return this.copyHere(req.id, req.from);
    if (!this.link) throw new TrellisError('ERR_UNSUPPORTED', 'this store has no RPC client configured (token)');
    if (!target.rpc) throw new TrellisError('ERR_UNSUPPORTED', `instance ${target.instanceId} serves no RPC`);
    return decodeReply('replicate', await this.link.ask(target.rpc, { t: 'replicate', ...req }));
  }

  /**
   * The `replicate` request: makes this store's copy of object `id` from the
   * live copy `from` and adds it to the object's replica set, unless the set
   * has all its copies by then (the copy is deleted again: `added` false).
   *
   * The set is not read before the pull: the one transaction that adds the
   * copy reads it and refuses a copy it does not need, and publishes the
   * copy's records with it (before, a read, a persist and the transaction
   * were three etcd round trips after the bytes and one before them).
   */
  copyHere(id: string, from: ReplicaCopy): Promise<{ id: string; added: boolean }> {
    const running = this.making.get(id);
    if (running) return running;
    const job = this.makeCopy(id, from).finally(() => this.making.delete(id));
    this.making.set(id, job);
    return job;
  }

  private async makeCopy(id: string, from: ReplicaCopy): Promise<{ id: string; added: boolean }> {
    const made = this.here.get(id);
    // Asked again for a copy made here before (a retried request): the set lists it already.
    if (made !== undefined && this.table.has(made)) return { id: made, added: true };
    if (!this.meta.isAlive(from.instanceId)) {
      throw new TrellisError(
        'ERR_OBJECT_LOST',
        `the copy ${from.id} of ${id} lived on instance ${from.instanceId}, which is gone`,
      );
    }
    const local = await this.pull(from);
    this.here.set(id, local);
    this.rootOf.set(local, id);
    let known = true;
    try {
      const publish = this.host!.unpublished([local]);
      const after = await this.meta.updateReplicaSet(
        id,
        (cur) => {
          known = cur !== undefined;
          if (!cur || cur.copies.some((c) => c.id === local)) return undefined;
          const alive = cur.copies.filter((c) => this.meta.isAlive(c.instanceId));
          if (alive.length >= cur.factor) return undefined;
          // Copies on stores that are gone are dropped as the new one comes in.
          return { ...cur, copies: [...alive, { id: local, instanceId: this.instanceId }], updatedAt: Date.now() };
        },
        publish.records,
      );
      if (after?.copies.some((c) => c.id === local)) {
        publish.written();
        return { id: local, added: true };
      }
    } catch (e) {
      await this.dropCopy(local);
      throw e;
    }
    await this.dropCopy(local);
    if (!known) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} is not replicated`);
    return { id: from.id, added: false };
  }

  private async pull(from: ReplicaCopy): Promise<string> {
    if (from.instanceId === this.instanceId) {
      throw new TrellisError('ERR_BAD_REQUEST', `the copy ${from.id} is on this store already`);
    }
    const find = (list: InstanceInfo[]) => list.find((i) => i.instanceId === from.instanceId);
    const owner = find(this.meta.cachedInstances()) ?? find(await this.meta.instances());
    if (!owner?.rpc) throw new TrellisError('ERR_OBJECT_LOST', `instance ${from.instanceId} is gone or serves no RPC`);
    if (!this.link) throw new TrellisError('ERR_UNSUPPORTED', 'this store has no RPC client configured (token)');
    return this.link.pull(owner.rpc, from.id);
  }

  private async dropCopy(local: string): Promise<void> {
    const root = this.rootOf.get(local);
    this.rootOf.delete(local);
    if (root !== undefined && this.here.get(root) === local) this.here.delete(root);
    if (this.table.has(local)) await this.host!.deleteLocal(local).catch(() => {});
  }

  /**
   * After objects were deleted here: a deleted copy leaves its set (repair
   * makes another), and a deleted replicated object takes every copy with it.
   */
  async deleted(ids: string[]): Promise<void> {
    const roots: string[] = [];
    for (const id of ids) {
      const root = this.rootOf.get(id);
      if (root === undefined) {
        roots.push(id);
        continue;
      }
      this.rootOf.delete(id);
      if (this.here.get(root) === id) this.here.delete(root);
      await this.meta.updateReplicaSet(root, (cur) =>
        cur?.copies.some((c) => c.id === id)
          ? { ...cur, copies: cur.copies.filter((c) => c.id !== id), updatedAt: Date.now() }
          : undefined,
      );
    }
    if (roots.length > 0) await this.deleteEveryCopy(roots);
  }

  /**
   * Deletes every copy of these objects, on every live store, then their
   * records and replica sets. Resolves with the ids that were replicated.
   */
  async deleteEveryCopy(ids: string[]): Promise<string[]> {
    const sets = await this.meta.getReplicaSets(ids);
    const done: string[] = [];
    for (const set of sets) {
      if (!set) continue;
      for (const c of set.copies) {
        if (c.instanceId === this.instanceId) {
          this.rootOf.delete(c.id);
          if (this.table.has(c.id)) await this.host!.deleteLocal(c.id);
          continue;
        }
        if (!this.meta.isAlive(c.instanceId)) continue;
        await this.deleteRemote(c);
      }
      this.here.delete(set.id);
      done.push(set.id);
    }
    // Records of copies on stores that are gone (and of a primary that is) go with the sets.
    const orphans = sets.flatMap((s) =>
      s ? s.copies.filter((c) => !this.meta.isAlive(c.instanceId)).map((c) => c.id) : [],
    );
    if (done.length > 0) await this.meta.deleteObjects([...done, ...orphans]);
    return done;
  }

  private async deleteRemote(c: ReplicaCopy): Promise<void> {
    const owner = this.meta.cachedInstances().find((i) => i.instanceId === c.instanceId);
    if (!owner?.rpc || !this.link) return;
    try {
      await this.link.ask(owner.rpc, { t: 'delete', ids: [c.id], deep: true });
    } catch (e) {
      // Deleted there already (or its store went meanwhile): nothing of it is left to delete.
      if (!(e instanceof TrellisError && (e.code === 'ERR_OBJECT_NOT_FOUND' || e.code === 'ERR_DISCONNECTED'))) throw e;
    }
  }
}
