/**
 * The cluster metadata backend, on etcd. Keys, under a prefix so several
 * deployments can share one etcd:
 *
 *   <prefix>/instance-counter          last instance id handed out (never reused)
 *   <prefix>/instances/<id>            InstanceInfo JSON, attached to the store's lease
 *   <prefix>/objects/<id>              GlobalObject JSON
 *   <prefix>/names/<name>              object id
 *   <prefix>/object-names/<id>/<name>  reverse index, so deleting an object drops its names
 *   <prefix>/replicas/<id>             ReplicaSet JSON: every copy of a replicated object
 *   <prefix>/locks/<name>              instance id of the holder, attached to its lease (repair)
 *
 * A store keeps its lease alive; if the lease is lost (etcd restarted, a long
 * partition) it registers again under the same instance id and asks the store
 * to publish its objects and names again (`onReregistered`). Writes issued in
 * the same tick are sent as one transaction: etcd manages ~600 sequential
 * puts/s on these machines, but a transaction of a hundred costs about one.
 */
import { ConsecutiveBreaker, circuitBreaker, ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { Etcd3, type IKeyValue, isRecoverableError, type Lease, type Watcher } from 'etcd3';
import { TrellisError } from '../errors.js';
import { type GlobalObject, type InstanceInfo, nameListing, type ReplicaSet } from '../protocol/records.js';
import type { MetaService, ReplicaSetChange } from './meta-service.js';

type RequestOp = {
  request_put?: { key: Buffer; value: Buffer; lease?: string };
  request_delete_range?: { key: Buffer; range_end?: Buffer };
  request_range?: { key: Buffer; range_end?: Buffer; limit?: number };
};

export interface EtcdMetaOptions {
  /** host:port of an etcd client endpoint. */
  endpoint: string;
  /** Key prefix (default /trellis/default). */
  prefix?: string;
  /** Lease TTL in seconds (default 10). */
  leaseTtl?: number;
  /** Timeout for one etcd call (default 5000 ms). */
  callTimeoutMs?: number;
  log?: (msg: string) => void;
}

const MAX_TXN_OPS = 128;

interface Waiter {
  name: string;
  owner: number;
  watcher: Promise<Watcher> | null;
  timer: NodeJS.Timeout | null;
  resolve: (id: string) => void;
  reject: (e: TrellisError) => void;
}

interface PendingWrite {
  ops: RequestOp[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** The end of a prefix range: the prefix with its last byte incremented. */
function prefixEnd(key: Buffer): Buffer {
  const end = Buffer.from(key);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export class EtcdMeta implements MetaService {
  readonly kind = 'etcd' as const;
  onReregistered: () => void = () => {};
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly ttl: number;
  private readonly timeoutMs: number;
  private readonly log: (msg: string) => void;
  private lease: Lease | null = null;
  /** The granted lease's id, for keys a transaction attaches to it (locks). */
  private leaseId: string | null = null;
  private instanceId = -1;
  private info: InstanceInfo | null = null;
  private readonly live = new Map<number, InstanceInfo>();
  private instanceWatcher: Watcher | null = null;
  /**
   * Read caches fed by watches: names and object records are read far more
   * often than written (every get of a remote id, every locate), and an etcd
   * read costs a raft round (~1 ms here). A hit answers locally; a miss asks
   * etcd, so a cache never claims a name or object does not exist.
   */
  private readonly nameCache = new Map<string, string>();
  private readonly objectCache = new Map<string, GlobalObject>();
  private cacheWatchers: Watcher[] = [];
  private cacheHits = 0;
  private refreshTimer: NodeJS.Timeout | null = null;
  private readonly waiters = new Set<Waiter>();
  private queue: PendingWrite[] = [];
  private flushScheduled = false;
  private closed = false;
  private registrations = 0;
  private reregistering: Promise<void> | null = null;
  private txns = 0;

  constructor(opts: EtcdMetaOptions) {
    this.prefix = (opts.prefix ?? '/trellis/default').replace(/\/+$/, '');
    this.ttl = opts.leaseTtl ?? 10;
    this.timeoutMs = opts.callTimeoutMs ?? 5000;
    this.log = opts.log ?? (() => {});
    const hosts = opts.endpoint.startsWith('http') ? opts.endpoint : `http://${opts.endpoint}`;
    // Reconnect fast: the client's defaults (5 s circuit breaker, grpc backoff
    // growing to minutes) would keep a store away from etcd long after it is back.
    const recoverable = handleWhen(isRecoverableError);
    this.client = new Etcd3({
      hosts,
      dialTimeout: this.timeoutMs,
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.min_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
      },
      faultHandling: {
        host: () => circuitBreaker(recoverable, { halfOpenAfter: 300, breaker: new ConsecutiveBreaker(3) }),
        global: retry(recoverable, {
          maxAttempts: 2,
          backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 200 }),
        }),
        // etcd3 calls .next() on this itself: it wants the factory, whatever its typings say.
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as never,
      },
    });
  }

  private key(k: string): Buffer {
    return Buffer.from(`${this.prefix}/${k}`);
  }

  /** Runs an etcd call with a deadline; any failure becomes ERR_META_UNAVAILABLE. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new TrellisError('ERR_SHUTTING_DOWN', 'the metadata service is closed');
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new TrellisError('ERR_META_UNAVAILABLE', `etcd did not answer ${what} within ${this.timeoutMs} ms`),
              ),
            this.timeoutMs,
          );
        }),
      ]);
    } catch (e) {
      if (e instanceof TrellisError) throw e;
      throw new TrellisError('ERR_META_UNAVAILABLE', `etcd ${what} failed: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  private txn(compare: unknown[], success: RequestOp[], failure: RequestOp[] = []) {
    this.txns++;
    return this.call('txn', () =>
      this.client.kv.txn({ compare: compare as never, success: success as never, failure: failure as never }),
    );
  }

  // ---- instances ----------------------------------------------------------

  async register(info: Omit<InstanceInfo, 'instanceId' | 'updatedAt'>): Promise<number> {
    this.instanceId = await this.allocateInstanceId();
    this.info = { ...info, instanceId: this.instanceId, updatedAt: Date.now() };
    await this.grantAndPublish();
    await this.refreshInstances();
    this.watchInstances();
    await this.watchCaches();
    this.refreshTimer = setInterval(
      () => {
        this.refreshInstances().catch(() => {});
      },
      Math.max(500, (this.ttl * 1000) / 2),
    );
    this.refreshTimer.unref();
    return this.instanceId;
  }

  private async allocateInstanceId(): Promise<number> {
    const key = this.key('instance-counter');
    for (let attempt = 0; attempt < 100; attempt++) {
      const res = await this.call('get', () => this.client.kv.range({ key }));
      const kv = res.kvs[0];
      const next = (kv ? Number(kv.value.toString()) : 0) + 1;
      if (next > 0xffff) throw new TrellisError('ERR_IDS_EXHAUSTED', 'all 65535 instance ids of this prefix are used');
      const compare = kv
        ? [{ key, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }]
        : [{ key, target: 'Create', result: 'Equal', create_revision: 0 }];
      const r = await this.txn(compare, [{ request_put: { key, value: Buffer.from(String(next)) } }]);
      if (r.succeeded) return next;
    }
    throw new TrellisError('ERR_META_UNAVAILABLE', 'could not allocate an instance id (too much contention)');
  }

  private async counterAtLeast(id: number): Promise<void> {
    const key = this.key('instance-counter');
    for (let attempt = 0; attempt < 100; attempt++) {
      const res = await this.call('get', () => this.client.kv.range({ key }));
      const kv = res.kvs[0];
      if (kv && Number(kv.value.toString()) >= id) return;
      const compare = kv
        ? [{ key, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }]
        : [{ key, target: 'Create', result: 'Equal', create_revision: 0 }];
      const r = await this.txn(compare, [{ request_put: { key, value: Buffer.from(String(id)) } }]);
      if (r.succeeded) return;
    }
  }

  private async grantAndPublish(): Promise<void> {
    const lease = this.client.lease(this.ttl, { autoKeepAlive: true });
    try {
      this.leaseId = await this.call('lease grant', () => lease.grant());
    } catch (e) {
      lease.release();
      throw e;
    }
    lease.on('lost', (err) => {
      if (this.closed || this.lease !== lease) return;
      this.log(`lease lost (${err.message}); registering again`);
      this.reregister();
    });
    this.lease = lease;
    this.registrations++;
    await this.publishInstance();
  }

  private async publishInstance(): Promise<void> {
    const lease = this.lease;
    const info = this.info;
    if (!lease || !info) return;
    await this.call('put instance', () =>
      lease
        .put(this.key(`instances/${info.instanceId}`))
        .value(JSON.stringify(info))
        .exec(),
    );
    this.live.set(info.instanceId, info);
  }

  /** Keeps trying to get a new lease; then the store publishes its objects again. */
  private reregister(): void {
    if (this.reregistering || this.closed) return;
    this.reregistering = (async () => {
      const old = this.lease;
      this.lease = null;
      old?.release();
      for (let delay = 200; !this.closed; delay = Math.min(delay * 2, 2000)) {
        try {
          // etcd may have lost its data: never hand our id to a newcomer.
          await this.counterAtLeast(this.instanceId);
          await this.grantAndPublish();
          // etcd may be a new one (revisions start over): watch from scratch.
          await this.watchCaches();
          this.instanceWatcher?.cancel().catch(() => {});
          this.instanceWatcher = null;
          this.watchInstances();
          this.log(`registered again as instance ${this.instanceId}`);
          this.onReregistered();
          return;
        } catch (e) {
          this.log(`registration failed: ${(e as Error).message}; retrying in ${delay} ms`);
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    })().finally(() => {
      this.reregistering = null;
    });
  }

  private watchInstances(): void {
    this.client
      .watch()
      .prefix(`${this.prefix}/instances/`)
      .create()
      .then((w) => {
        if (this.closed) {
          w.cancel().catch(() => {});
          return;
        }
        this.instanceWatcher = w;
        w.on('put', (kv: IKeyValue) => {
          const info = parseJson<InstanceInfo>(kv.value);
          if (info) this.live.set(info.instanceId, info);
        });
        w.on('delete', (kv: IKeyValue) => {
          const id = Number(kv.key.toString().split('/').pop());
          this.live.delete(id);
          // Our own key gone means our lease is gone, whatever the lease object thinks.
          if (id === this.instanceId && !this.closed) this.reregister();
        });
        w.on('error', () => {});
      })
      .catch(() => {
        // refreshInstances() keeps the cache right without the watch.
      });
  }

  private async watchCaches(): Promise<void> {
    for (const w of this.cacheWatchers) w.cancel().catch(() => {});
    this.cacheWatchers = [];
    this.nameCache.clear();
    this.objectCache.clear();
    const nkey = this.key('names/');
    const res = await this.call('list names', () => this.client.kv.range({ key: nkey, range_end: prefixEnd(nkey) }));
    const start = String(BigInt(res.header.revision) + 1n);
    const names = await this.client.watch().prefix(`${this.prefix}/names/`).startRevision(start).create();
    const objects = await this.client.watch().prefix(`${this.prefix}/objects/`).startRevision(start).create();
    if (this.closed) {
      names.cancel().catch(() => {});
      objects.cancel().catch(() => {});
      return;
    }
    for (const kv of res.kvs) this.nameCache.set(kv.key.toString().slice(nkey.length), kv.value.toString());
    names.on('put', (kv: IKeyValue) => this.nameCache.set(kv.key.toString().slice(nkey.length), kv.value.toString()));
    names.on('delete', (kv: IKeyValue) => this.nameCache.delete(kv.key.toString().slice(nkey.length)));
    names.on('error', () => {});
    const okey = this.key('objects/');
    objects.on('put', (kv: IKeyValue) => {
      const o = parseJson<GlobalObject>(kv.value);
      if (o) this.cacheObject(o);
    });
    objects.on('delete', (kv: IKeyValue) => this.objectCache.delete(kv.key.toString().slice(okey.length)));
    objects.on('error', () => {});
    this.cacheWatchers = [names, objects];
  }

  private cacheObject(o: GlobalObject): void {
    if (this.objectCache.size >= 200_000) this.objectCache.clear();
    this.objectCache.set(o.id, o);
  }

  private async refreshInstances(): Promise<void> {
    const key = this.key('instances/');
    const res = await this.call('list instances', () => this.client.kv.range({ key, range_end: prefixEnd(key) }));
    const seen = new Map<number, InstanceInfo>();
    for (const kv of res.kvs) {
      const info = parseJson<InstanceInfo>(kv.value);
      if (info) seen.set(info.instanceId, info);
    }
    this.live.clear();
    for (const [id, info] of seen) this.live.set(id, info);
    if (this.info && !seen.has(this.instanceId) && !this.closed && this.lease) {
      this.reregister();
    }
  }

  async updateInstance(patch: Partial<Omit<InstanceInfo, 'instanceId'>>): Promise<void> {
    if (!this.info) return;
    this.info = { ...this.info, ...patch, updatedAt: Date.now() };
    if (this.lease && !this.reregistering) await this.publishInstance();
  }

  async instances(): Promise<InstanceInfo[]> {
    await this.refreshInstances();
    return [...this.live.values()].sort((a, b) => a.instanceId - b.instanceId);
  }

  cachedInstances(): InstanceInfo[] {
    return [...this.live.values()].sort((a, b) => a.instanceId - b.instanceId);
  }

  isAlive(instanceId: number): boolean {
    return instanceId === this.instanceId || this.live.has(instanceId);
  }

  // ---- objects -------------------------------------------------------------

  putObjects(objects: GlobalObject[]): Promise<void> {
    return this.write(
      objects.map((o) => ({
        request_put: { key: this.key(`objects/${o.id}`), value: Buffer.from(JSON.stringify(o)) },
      })),
    );
  }

  /** Queues puts/deletes; everything queued in one tick goes out in as few transactions as etcd allows. */
  private write(ops: RequestOp[]): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const queue = this.queue;
    this.queue = [];
    // Group whole requests into transactions of at most MAX_TXN_OPS distinct keys;
    // a request larger than that is split over several.
    let batch: PendingWrite[] = [];
    let keys = new Set<string>();
    const send = (items: PendingWrite[], ops: RequestOp[]) => {
      const chunks: RequestOp[][] = [];
      for (let i = 0; i < ops.length; i += MAX_TXN_OPS) chunks.push(ops.slice(i, i + MAX_TXN_OPS));
      Promise.all(chunks.map((c) => this.txn([], c))).then(
        () => {
          for (const it of items) it.resolve();
        },
        (e) => {
          for (const it of items) it.reject(e);
        },
      );
    };
    const opsOf = (items: PendingWrite[]) => items.flatMap((it) => it.ops);
    for (const item of queue) {
      const itemKeys = item.ops.map(opKey);
      const clash = itemKeys.some((k) => keys.has(k));
      if (batch.length > 0 && (clash || keys.size + itemKeys.length > MAX_TXN_OPS)) {
        send(batch, opsOf(batch));
        batch = [];
        keys = new Set();
      }
      batch.push(item);
      for (const k of itemKeys) keys.add(k);
    }
    if (batch.length > 0) send(batch, opsOf(batch));
  }

  async getObjects(ids: string[]): Promise<(GlobalObject | undefined)[]> {
    const out: (GlobalObject | undefined)[] = ids.map((id) => this.objectCache.get(id));
    const missing = ids.filter((_, i) => out[i] === undefined);
    this.cacheHits += ids.length - missing.length;
    if (missing.length === 0) return out;
    const fetched = await this.fetchObjects(missing);
    let j = 0;
    for (let i = 0; i < out.length; i++) {
      if (out[i] !== undefined) continue;
      const o = fetched[j++];
      if (o) this.cacheObject(o);
      out[i] = o;
    }
    return out;
  }

  private fetchObjects(ids: string[]): Promise<(GlobalObject | undefined)[]> {
    return this.fetchJson<GlobalObject>('objects', ids);
  }

  /** The JSON values of `<dir>/<id>` for each id, in as few transactions as etcd allows. */
  private async fetchJson<T>(dir: string, ids: string[]): Promise<(T | undefined)[]> {
    const out: (T | undefined)[] = [];
    for (let i = 0; i < ids.length; i += MAX_TXN_OPS) {
      const chunk = ids.slice(i, i + MAX_TXN_OPS);
      const r = await this.txn(
        [],
        chunk.map((id) => ({ request_range: { key: this.key(`${dir}/${id}`) } })),
      );
      for (const resp of r.responses) {
        const kv = resp.response_range?.kvs[0];
        out.push(kv ? parseJson<T>(kv.value) : undefined);
      }
    }
    return out;
  }

  async listObjects(filter: { typename?: string; instanceId?: number; limit: number }): Promise<GlobalObject[]> {
    const key = this.key('objects/');
    const res = await this.call('list objects', () => this.client.kv.range({ key, range_end: prefixEnd(key) }));
    const out: GlobalObject[] = [];
    for (const kv of res.kvs) {
      if (out.length >= filter.limit) break;
      const o = parseJson<GlobalObject>(kv.value);
      if (!o) continue;
      if (filter.typename !== undefined && o.typename !== filter.typename) continue;
      if (filter.instanceId !== undefined && o.instanceId !== filter.instanceId) continue;
      out.push(o);
    }
    return out;
  }

  // ---- replica sets and locks ----------------------------------------------

  getReplicaSets(ids: string[]): Promise<(ReplicaSet | undefined)[]> {
    return this.fetchJson<ReplicaSet>('replicas', ids);
  }

  async listReplicaSets(): Promise<ReplicaSet[]> {
    const key = this.key('replicas/');
    const res = await this.call('list replica sets', () => this.client.kv.range({ key, range_end: prefixEnd(key) }));
    const out: ReplicaSet[] = [];
    for (const kv of res.kvs) {
      const set = parseJson<ReplicaSet>(kv.value);
      if (set) out.push(set);
    }
    return out;
  }

  async updateReplicaSet(
    id: string,
    change: ReplicaSetChange,
    records: GlobalObject[] = [],
  ): Promise<ReplicaSet | undefined> {
    const key = this.key(`replicas/${id}`);
    // The records ride in the set's transaction (one fsync less per copy) while they fit in one.
    if (records.length > MAX_TXN_OPS - 1) {
      await this.putObjects(records);
      records = [];
    }
    for (let attempt = 0; attempt < 100; attempt++) {
      const res = await this.call('get replica set', () => this.client.kv.range({ key }));
      const kv = res.kvs[0];
      const current = kv ? parseJson<ReplicaSet>(kv.value) : undefined;
      const next = change(current);
      if (next === undefined) return current;
      // The key's version moves on every write: a writer in between makes this one try again.
      const compare = kv
        ? [{ key, target: 'Version', result: 'Equal', version: kv.version }]
        : [{ key, target: 'Create', result: 'Equal', create_revision: 0 }];
      const ops: RequestOp[] =
        next === null
          ? [{ request_delete_range: { key } }]
          : [
              { request_put: { key, value: Buffer.from(JSON.stringify(next)) } },
              ...records.map((o) => ({
                request_put: { key: this.key(`objects/${o.id}`), value: Buffer.from(JSON.stringify(o)) },
              })),
            ];
      const r = await this.txn(compare, ops);
      if (r.succeeded) return next ?? undefined;
    }
    throw new TrellisError('ERR_META_UNAVAILABLE', `could not update the replica set of ${id} (too much contention)`);
  }

  async holdLock(name: string): Promise<number | undefined> {
    const leaseId = this.leaseId;
    if (!this.lease || leaseId === null || this.reregistering) return undefined;
    const key = this.key(`locks/${name}`);
    const r = await this.txn(
      [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
      [{ request_put: { key, value: Buffer.from(String(this.instanceId)), lease: leaseId } }],
      [{ request_range: { key } }],
    );
    if (r.succeeded) return this.instanceId;
    const holder = r.responses[0]?.response_range?.kvs[0]?.value.toString();
    return holder === undefined ? undefined : Number(holder);
  }

  async deleteObjects(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const ops: RequestOp[] = [];
    for (const id of ids) {
      ops.push({ request_delete_range: { key: this.key(`replicas/${id}`) } });
      const rkey = this.key(`object-names/${id}/`);
      const res = await this.call('get names', () => this.client.kv.range({ key: rkey, range_end: prefixEnd(rkey) }));
      for (const kv of res.kvs) {
        const name = kv.key.toString().slice(rkey.length);
        const current = await this.readName(name);
        if (current === id) ops.push({ request_delete_range: { key: this.key(`names/${name}`) } });
      }
      ops.push({ request_delete_range: { key: rkey, range_end: prefixEnd(rkey) } });
      ops.push({ request_delete_range: { key: this.key(`objects/${id}`) } });
    }
    await this.write(ops);
  }

  // ---- names ---------------------------------------------------------------

  async putName(name: string, id: string, overwrite: boolean): Promise<string | undefined> {
    const nkey = this.key(`names/${name}`);
    const rkey = this.key(`object-names/${id}/${name}`);
    const puts: RequestOp[] = [
      { request_put: { key: nkey, value: Buffer.from(id) } },
      { request_put: { key: rkey, value: Buffer.alloc(0) } },
    ];
    if (!overwrite) {
      const r = await this.txn([{ key: nkey, target: 'Create', result: 'Equal', create_revision: 0 }], puts, [
        { request_range: { key: nkey } },
      ]);
      if (r.succeeded) {
        this.nameCache.set(name, id);
        return undefined;
      }
      const prev = r.responses[0]?.response_range?.kvs[0]?.value.toString();
      if (prev === id) return id;
      throw new TrellisError('ERR_OBJECT_EXISTS', `name ${JSON.stringify(name)} is bound to ${prev}`);
    }
    const prev = await this.readName(name);
    const ops = [...puts];
    if (prev !== undefined && prev !== id) {
      ops.push({ request_delete_range: { key: this.key(`object-names/${prev}/${name}`) } });
    }
    await this.txn([], ops);
    this.nameCache.set(name, id);
    return prev;
  }

  async getName(name: string): Promise<string | undefined> {
    const cached = this.nameCache.get(name);
    if (cached !== undefined) {
      this.cacheHits++;
      return cached;
    }
    return this.readName(name);
  }

  /** The binding as etcd has it now, past the cache: what writes base themselves on. */
  private async readName(name: string): Promise<string | undefined> {
    const res = await this.call('get name', () => this.client.kv.range({ key: this.key(`names/${name}`) }));
    return res.kvs[0]?.value.toString();
  }

  waitName(name: string, timeoutMs: number, owner: number): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const w: Waiter = { name, owner, watcher: null, timer: null, resolve, reject };
      const finish = (fn: () => void) => {
        if (!this.waiters.delete(w)) return;
        if (w.timer) clearTimeout(w.timer);
        w.watcher?.then((x) => x.cancel()).catch(() => {});
        fn();
      };
      w.resolve = (id) => finish(() => resolve(id));
      w.reject = (e) => finish(() => reject(e));
      this.waiters.add(w);
      if (timeoutMs > 0) {
        w.timer = setTimeout(
          () =>
            w.reject(
              new TrellisError('ERR_TIMEOUT', `name ${JSON.stringify(name)} did not appear within ${timeoutMs} ms`),
            ),
          timeoutMs,
        );
      }
      // Watch first, then read: a put between the two is seen by one of them.
      w.watcher = this.client
        .watch()
        .key(`${this.prefix}/names/${name}`)
        .create()
        .then((watcher) => {
          watcher.on('put', (kv: IKeyValue) => w.resolve(kv.value.toString()));
          watcher.on('error', () => {});
          return watcher;
        });
      w.watcher
        .then(() => this.getName(name))
        .then((id) => {
          if (id !== undefined) w.resolve(id);
        })
        .catch((e) => w.reject(e instanceof TrellisError ? e : new TrellisError('ERR_META_UNAVAILABLE', String(e))));
    });
  }

  cancelWaiters(owner: number | null, error: TrellisError): void {
    for (const w of [...this.waiters]) if (owner === null || w.owner === owner) w.reject(error);
  }

  async dropName(name: string): Promise<string> {
    const id = await this.readName(name);
    if (id === undefined) throw new TrellisError('ERR_NAME_NOT_FOUND', `no object is named ${JSON.stringify(name)}`);
    await this.txn(
      [],
      [
        { request_delete_range: { key: this.key(`names/${name}`) } },
        { request_delete_range: { key: this.key(`object-names/${id}/${name}`) } },
      ],
    );
    this.nameCache.delete(name);
    return id;
  }

  async listNames(prefix: string): Promise<Record<string, string>> {
    const base = this.key('names/');
    const key = this.key(`names/${prefix}`);
    const res = await this.call('list names', () => this.client.kv.range({ key, range_end: prefixEnd(key) }));
    return nameListing(res.kvs.map((kv) => [kv.key.toString().slice(base.length), kv.value.toString()] as const));
  }

  describe(): Record<string, unknown> {
    return {
      backend: 'etcd',
      prefix: this.prefix,
      leaseTtl: this.ttl,
      registrations: this.registrations,
      liveInstances: this.live.size,
      nameWaiters: this.waiters.size,
      transactions: this.txns,
      cacheHits: this.cacheHits,
      cachedNames: this.nameCache.size,
      cachedObjects: this.objectCache.size,
    };
  }

  /** Deregisters (revokes the lease, so the instance disappears at once) and disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.cancelWaiters(null, new TrellisError('ERR_SHUTTING_DOWN', 'the store is shutting down'));
    // Let queued writes go out before the lease and connection go.
    if (this.queue.length > 0) this.flush();
    this.closed = true;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    await this.instanceWatcher?.cancel().catch(() => {});
    await Promise.all(this.cacheWatchers.map((w) => w.cancel().catch(() => {})));
    const lease = this.lease;
    this.lease = null;
    if (lease) {
      await Promise.race([lease.revoke().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
    }
    this.client.close();
  }
}

function opKey(op: RequestOp): string {
  const k = op.request_put?.key ?? op.request_delete_range?.key ?? op.request_range?.key;
  return k ? k.toString('latin1') : '';
}

function parseJson<T>(b: Buffer): T | undefined {
  try {
    return JSON.parse(b.toString()) as T;
  } catch {
    return undefined;
  }
}
