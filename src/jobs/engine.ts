/**
 * The engine behind the HTTP API: `startJobService()` opens the job store in
 * Redis and a store client (the API's local store over `socket`, or over RPC
 * to a store found through etcd), checks that Redis does not evict, starts
 * the scheduler and answers the JobService interface.
 *
 * Submit validates everything it can see before anything is queued: the spec's
 * fields, the dataset (ERR_NAME_NOT_FOUND, like any unknown name), the model
 * of an infer job (ERR_NAME_NOT_FOUND) and the handler of a map job
 * (ERR_HANDLER_NOT_FOUND unless a live agent's heartbeat lists it: handlers
 * live on the agents' disks, not the API's).
 *
 * @example
 *   const jobs = await startJobService({ redis: 'redis://127.0.0.1:6379', socket: '/tmp/trellis.sock', logger });
 *   const { job } = await jobs.submit({ kind: 'map', dataset: 'fmnist/train', handler: 'sum' });
 *   for await (const ev of jobs.events(job.id, undefined, AbortSignal.timeout(60_000))) console.log(ev);
 */
import { connect } from '../client/connect.js';
import type { StoreClient } from '../client/store-client.js';
import { TrellisError } from '../errors.js';
import { DATASET_TYPENAME } from '../store/cluster.js';
import type { TlsFiles } from '../tls-config.js';
import { ClusterView } from './cluster-view.js';
import { effectiveBatchWarning } from './effective-batch.js';
import { JobStore, newJobId } from './job-store.js';
import type { DatasetInfo, Job, JobEvent, JobFilter, JobService, JobSpec, NodeInfo } from './job-types.js';
import { defaultRanks, shardHolders } from './rank-placement.js';
import { checkNoEviction } from './redis-policy.js';
import { type EngineLogger, Scheduler, type SchedulerOptions, taskInputs } from './scheduler.js';
import { checkSpec } from './schema/check-spec.js';
import { type StoreLink, storeLink } from './store-link.js';

export interface JobServiceOptions {
  /** redis://HOST:PORT */
  redis: string;
  /** local, or etcd://HOST:PORT: without `socket`, the API reaches a store over RPC through etcd. */
  meta?: string;
  /** The etcd key prefix of the stores (default /trellis/default). */
  metaPrefix?: string;
  /** A local store's UNIX socket. */
  socket?: string;
  /** The stores' RPC token, when connecting over RPC. */
  token?: string;
  /** Speak TLS to the stores over RPC: their CA, and a certificate to present for mutual TLS. */
  storeTls?: TlsFiles;
  logger: EngineLogger;
  /** The deployment's key prefix in Redis (default trellis:default); tests use one per test. */
  prefix?: string;
  scheduler?: Partial<SchedulerOptions>;
}

async function storeClient(opts: JobServiceOptions): Promise<StoreClient> {
  if (opts.socket) return connect({ socket: opts.socket, name: 'trellis api' });
  if (opts.meta?.startsWith('etcd://')) {
    const { EtcdMeta } = await import('../meta/etcd-meta.js');
    const meta = new EtcdMeta({ endpoint: opts.meta.slice('etcd://'.length), prefix: opts.metaPrefix });
    try {
      const withRpc = (await meta.instances()).find((i) => i.rpc);
      if (!withRpc?.rpc)
        throw new TrellisError('ERR_META_UNAVAILABLE', `no store with an RPC endpoint in ${opts.meta}`);
      return await connect({
        rpc: `${withRpc.rpc.host}:${withRpc.rpc.port}`,
        token: opts.token,
        name: 'trellis api',
        tls: opts.storeTls,
      });
    } finally {
      await meta.close();
    }
  }
  throw new TrellisError('ERR_BAD_REQUEST', 'the job service needs a store: give socket, or meta etcd://HOST:PORT');
}

class Engine implements JobService {
  private closing?: Promise<void>;

  constructor(
    readonly store: JobStore,
    private readonly link: StoreLink,
    readonly cluster: ClusterView,
    readonly scheduler: Scheduler,
  ) {}

  private get client(): StoreClient {
    return this.link.client;
  }

  async ready(): Promise<void> {
    // The connection's state, not a PING: commands wait (they are queued) while Redis is away.
    const status = this.store.redis.status;
    if (status !== 'ready') throw new TrellisError('ERR_QUEUE_UNAVAILABLE', `Redis is not connected (${status})`);
    await this.link.ready();
  }

  async submit(spec: JobSpec): Promise<{ job: Job; created: boolean }> {
    checkSpec(spec);
    if (spec.id !== undefined) {
      // Same id again: the existing job, before any validation that could disagree with the first time.
      const existing = await this.store.record(spec.id);
      if (existing) return { job: await this.store.get(spec.id), created: false };
    }
    const shards = await this.cluster.shards(spec.dataset);
    if (shards.length === 0) throw new TrellisError('ERR_BAD_REQUEST', `dataset ${spec.dataset} has no shards`);
    if (spec.kind === 'train' && spec.evalDataset !== undefined) await this.cluster.shards(spec.evalDataset);
    if (spec.kind === 'infer') await this.client.getName(spec.model);
    if (spec.kind === 'map') {
      const live = await this.store.liveNodes();
      if (!live.some((n) => n.handlers.includes(spec.handler))) {
        const offered = [...new Set(live.flatMap((n) => n.handlers))].sort();
        throw new TrellisError(
          'ERR_HANDLER_NOT_FOUND',
          `no live agent offers handler ${JSON.stringify(spec.handler)} ` +
            `(${live.length} live agents; handlers: ${offered.length ? offered.join(', ') : 'none'})`,
        );
      }
    }
    const id = spec.id ?? newJobId();
    const ids = shards.map((s) => s.id);
    let stored: JobSpec = { ...spec, id };
    const warnings: string[] = [];
    if (stored.kind === 'train') {
      // Fixed at submit: the rank count is what the effective batch, and so the learning rate, depend on.
      let ranks = stored.ranks;
      if (ranks === undefined) {
        const nodeOf = new Map((await this.store.liveNodes()).map((b) => [b.instanceId, b.name]));
        ranks = defaultRanks(
          shards.map((s) => ({ id: s.id, nbytes: s.nbytes, holders: shardHolders(s.holders, nodeOf) })),
        );
      }
      stored = { ...stored, ranks };
      const w = effectiveBatchWarning(stored, ranks);
      if (w) warnings.push(w);
    }
    const out = await this.store.create(
      id,
      stored,
      ids,
      taskInputs(stored, ids).length,
      'waiting for the scheduler',
      warnings,
    );
    if (out.created) for (const w of warnings) await this.store.log(id, `warning: ${w}`);
    if (out.created) this.scheduler.wake();
    return out;
  }

  get(id: string): Promise<Job> {
    return this.store.get(id);
  }

  list(filter: JobFilter): Promise<Job[]> {
    return this.store.list(filter);
  }

  async cancel(id: string): Promise<Job> {
    await this.store.transition(
      id,
      'cancelled',
      ['queued', 'running'],
      { endedAt: new Date().toISOString(), reason: 'cancelled on request' },
      [],
      { reason: 'cancelled on request' },
    );
    await this.scheduler.dropQueued(id);
    return this.store.get(id);
  }

  events(id: string, afterId: string | undefined, signal: AbortSignal): AsyncIterable<JobEvent> {
    return this.store.events(id, afterId, signal);
  }

  logs(id: string): Promise<string> {
    return this.store.logs(id);
  }

  async nodes(): Promise<NodeInfo[]> {
    const [beats, instances] = await Promise.all([this.store.liveNodes(), this.cluster.instances()]);
    return Promise.all(
      beats.map(async (b) => {
        const inst = instances.find((i) => i.instanceId === b.instanceId);
        return {
          name: b.name,
          instanceId: b.instanceId,
          memoryUsed: inst?.memoryUsed ?? 0,
          memoryLimit: inst?.memoryLimit ?? 0,
          queue: await this.scheduler.queueCounts(b.name),
        };
      }),
    );
  }

  async dataset(name: string): Promise<DatasetInfo> {
    const [shards, beats, instances] = await Promise.all([
      this.cluster.shards(name),
      this.store.liveNodes(),
      this.cluster.instances(),
    ]);
    const nodeOf = (instanceId: number) =>
      beats.find((b) => b.instanceId === instanceId)?.name ??
      (instances.find((i) => i.instanceId === instanceId)?.name || `instance-${instanceId}`);
    const out: DatasetInfo = { name, shards: [], bytesByNode: {} };
    for (const s of shards) {
      const node = s.instanceId < 0 ? 'lost' : nodeOf(s.instanceId);
      out.shards.push({ id: s.id, node, nbytes: s.nbytes });
      out.bytesByNode[node] = (out.bytesByNode[node] ?? 0) + s.nbytes;
    }
    return out;
  }

  async datasets(limit = 100): Promise<DatasetInfo[]> {
    const [names, sets] = await Promise.all([
      this.client.listNames(),
      this.client.listGlobal({ typename: DATASET_TYPENAME, limit: 10_000 }),
    ]);
    const ids = new Set(sets.map((s) => s.id));
    const named = Object.keys(names)
      .filter((n) => ids.has(names[n]!))
      .sort()
      .slice(0, limit);
    // A name dropped between the two reads is skipped, not an error.
    const infos = await Promise.all(named.map((n) => this.dataset(n).catch(() => null)));
    return infos.filter((d): d is DatasetInfo => d !== null);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.scheduler.close();
      await this.store.close();
      await this.client.close();
    })();
    return this.closing;
  }
}

export async function startJobService(opts: JobServiceOptions): Promise<JobService> {
  // Opened on first use and re-opened after its store went away, so the API starts before any store
  // and outlives store restarts (store-link.ts).
  // A bad configuration fails here, before anything opens; a store that is not up yet does not.
  if (!opts.socket && !opts.meta?.startsWith('etcd://')) {
    throw new TrellisError('ERR_BAD_REQUEST', 'the job service needs a store: give socket, or meta etcd://HOST:PORT');
  }
  const link = storeLink(() => storeClient(opts));
  const client = link.client;
  let store: JobStore | undefined;
  try {
    store = await JobStore.open(opts.redis, opts.prefix ?? 'trellis:default', 'trellis api');
    await checkNoEviction(store.redis, 'trellis api');
    const cluster = new ClusterView(client);
    const scheduler = new Scheduler(store, cluster, opts.redis, opts.scheduler ?? {}, opts.logger);
    scheduler.start();
    await link
      .ready()
      .catch((e) =>
        opts.logger.warn(
          { code: (e as TrellisError).code },
          `${(e as Error).message}; not ready until a store is there`,
        ),
      );
    return new Engine(store, link, cluster, scheduler);
  } catch (e) {
    await store?.close();
    await client.close();
    throw e;
  }
}
