/**
 * The cluster the data-parallel training tests run on, all real: etcd,
 * stores on 127.0.0.x with RPC and a shared token, redis-server, the job
 * service (in-process, over one store's socket) and one `trellis agent`
 * process per data node. The token is also put in $TRELLIS_TOKEN for the
 * agents' task hosts (StoreCollective reads it) and restored by stop().
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TrellisClient } from '../../dist/src/index.js';
import { startJobService } from '../../dist/src/jobs/engine.js';
import type { JobService } from '../../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../../dist/src/jobs/redis-server.js';
import type { EngineLogger } from '../../dist/src/jobs/scheduler.js';
import { type EtcdHandle, startEtcd } from './etcd.js';
import { type AgentChild, freshPrefix, killAgents, quiet, spawnAgent } from './jobs.js';
import { clusterStoreArgs, spawnStore, tempDir } from './store.js';

export type Store = Awaited<ReturnType<typeof spawnStore>>;

export interface TrainClusterOptions {
  /** One store per address; the first `dataNodes` are named node0, node1, ... and get an agent each. */
  hosts: string[];
  dataNodes: number;
  /** Store i's --size. */
  size: (i: number) => string;
  /** Store i's name beyond the data nodes (default `node<i>`). */
  name?: (i: number) => string;
  /** More flags for every store. */
  storeArgs?: string[];
  /** The store whose socket the job service uses (default 0). */
  apiStore?: number;
  /** Flags for every agent. */
  agentArgs: string[];
  logger?: EngineLogger;
}

export interface TrainCluster {
  etcd: EtcdHandle;
  stores: Store[];
  clients: TrellisClient[];
  redis: RedisServerHandle;
  jobs: JobService;
  prefix: string;
  /** Agent i (undefined once killed). */
  agents: (AgentChild | undefined)[];
  startAgent(i: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startTrainCluster(o: TrainClusterOptions): Promise<TrainCluster> {
  const savedToken = process.env.TRELLIS_TOKEN;
  const etcd = await startEtcd();
  const dir = tempDir();
  const token = `${randomUUID()}${randomUUID()}`;
  const tokenFile = join(dir.dir, 'token');
  writeFileSync(tokenFile, token, { mode: 0o600 });
  process.env.TRELLIS_TOKEN = token;
  const metaPrefix = `/trellis-test/${randomUUID()}`;
  const stores = await Promise.all(
    o.hosts.map((host, i) =>
      spawnStore([
        ...clusterStoreArgs({
          name: o.name?.(i) ?? `node${i}`,
          size: o.size(i),
          etcdUrl: etcd.url,
          metaPrefix,
          host,
          tokenFile,
        }),
        ...(o.storeArgs ?? []),
      ]),
    ),
  );
  const clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
  const redis = await startRedisServer();
  const prefix = freshPrefix();
  const jobs = await startJobService({
    redis: redis.url,
    socket: stores[o.apiStore ?? 0].socket,
    logger: o.logger ?? quiet,
    prefix,
  });
  const agents: (AgentChild | undefined)[] = [];
  const startAgent = async (i: number) => {
    agents[i] = await spawnAgent(stores[i].socket, redis.url, prefix, o.agentArgs);
  };
  for (let i = 0; i < o.dataNodes; i++) await startAgent(i);
  return {
    etcd,
    stores,
    clients,
    redis,
    jobs,
    prefix,
    agents,
    startAgent,
    stop: async () => {
      await killAgents();
      await jobs.close();
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all(stores.map((s) => s.stop()));
      await redis.stop();
      await etcd.stop();
      dir.cleanup();
      if (savedToken === undefined) delete process.env.TRELLIS_TOKEN;
      else process.env.TRELLIS_TOKEN = savedToken;
    },
  };
}
