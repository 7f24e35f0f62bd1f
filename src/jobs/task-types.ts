/**
 * The seam between the agent (src/jobs/agent/: takes tasks off its node's
 * BullMQ queue, moves missing inputs here, commits results once) and the job
 * kinds (src/jobs/kinds/: what a train, map or infer task does). A kind never
 * sees BullMQ or Redis; the agent never knows what a kind computes.
 */
import type { StoreClient } from '../client/store-client.js';
import type { JobProgress, JobResult, JobSpec } from './job-types.js';

/** What travels on a node's queue: ids and control only, never data. */
export interface TaskPayload {
  jobId: string;
  index: number;
  /** The job's spec as submitted (validated by the API). */
  spec: JobSpec;
  /** The shard object ids this task reads, in dataset order (one for map/infer, a rank's share for train). */
  shards: string[];
  /** For train: this task's rank and the group size. */
  rank?: { index: number; count: number };
  /** For train: the group this rank belongs to (one per attempt: a restart forms a new one). */
  gang?: GangInfo;
}

/** A train job's group of ranks for one attempt, as the scheduler placed it. */
export interface GangInfo {
  /** 1 for the first group, +1 per restart. */
  attempt: number;
  /** The collective's group id, unique per job and attempt. */
  group: string;
  /** Rank r runs on node members[r].node, whose store is instance members[r].instance. */
  members: { rank: number; instance: number; node: string }[];
}

export interface TaskContext {
  /** A client of this node's store (IPC: zero-copy views). */
  client: StoreClient;
  /** The node (store name) the task runs on. */
  node: string;
  /** The socket of this node's store, for kinds that start their own workers (inference pool, loader). */
  socket: string;
  /**
   * The shards, as ids of local objects: the agent migrated those that lived
   * elsewhere before calling the kind, so `localShards[i]` is `payload.shards[i]`
   * or its local copy.
   */
  localShards: string[];
  /** Fires on cancel, job timeout, or agent shutdown; a kind stops within a second. */
  signal: AbortSignal;
  /** Throttled by the agent; the latest value wins. */
  progress(p: JobProgress): void;
  log(line: string): void;
  /** Where map handlers are looked up (the agent's --handlers directories, in order). */
  handlerDirs: string[];
}

export interface TaskOutput {
  /** Id of the object this task stored on its node (map and infer: this shard's output). */
  outputId?: string;
  /** For train: the stored model's name and the metrics. */
  result?: JobResult;
}

/** One job kind's task: runs off the agent's event loop (worker thread or child process). */
export type TaskRunner = (payload: TaskPayload, ctx: TaskContext) => Promise<TaskOutput>;
