/**
 * The jobs layer's public records and the one interface between the HTTP API
 * (src/jobs/api/) and the engine that keeps and runs jobs (JobService). The
 * shapes are the contract in docs/ARCHITECTURE.md ("Jobs"); the API's JSON
 * schemas describe the same records and a test keeps them in step.
 */

export type ModelSpecInput = { kind: 'softmax' } | { kind: 'mlp'; hidden: number[] };

interface JobSpecBase {
  /** Client-chosen id: submitting the same id again answers the existing job (idempotent). */
  id?: string;
  /** Higher runs first among queued jobs (default 0). */
  priority?: number;
  /** The whole job fails with ERR_TIMEOUT after this long running (default: none). */
  timeoutMs?: number;
  /** Attempts per task after the first (default 2), with exponential backoff. */
  maxRetries?: number;
}

export interface TrainJobSpec extends JobSpecBase {
  kind: 'train';
  dataset: string;
  evalDataset?: string;
  model: ModelSpecInput;
  epochs?: number;
  batchSize?: number;
  learningRate?: number;
  /** Data-parallel ranks, one task each (default: one per node holding shards). */
  ranks?: number;
  /**
   * The batch `learningRate` was tuned for (default: batchSize, one rank's
   * batch). The effective batch is ranks × batchSize; the rate is scaled by
   * effective / baseBatch with a linear warm-up (Goyal et al. 2017), and the
   * job warns when the two differ.
   */
  baseBatch?: number;
  /** Steps of the learning-rate warm-up when it is scaled (default: one epoch's steps, at most 200). */
  warmupSteps?: number;
  /** Rank 0 checkpoints parameters, optimizer state and loader position every this many steps (default 50). */
  checkpointEvery?: number;
  /** Times the group restarts from its checkpoint after losing a rank (default 3). */
  maxRestarts?: number;
}

export interface MapJobSpec extends JobSpecBase {
  kind: 'map';
  dataset: string;
  /** A module name found in an agent's --handlers directories, never code. */
  handler: string;
  args?: unknown;
  /** Name of the output dataset (default `<job id>/output`). */
  output?: string;
  /** Copies kept of every output shard, on distinct stores (default 1). */
  replicas?: number;
}

export interface InferJobSpec extends JobSpecBase {
  kind: 'infer';
  dataset: string;
  /** Name of a model stored with putModel. */
  model: string;
  output?: string;
  /** Copies kept of every output shard, on distinct stores (default 1). */
  replicas?: number;
}

export type JobSpec = TrainJobSpec | MapJobSpec | InferJobSpec;
export type JobKind = JobSpec['kind'];

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const FINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

export type TaskState = 'waiting' | 'placed' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface TaskInfo {
  index: number;
  /** The node (store name) the task was placed on. */
  node: string;
  state: TaskState;
  attempts: number;
  /** Input bytes the task read from its own node's store. */
  bytesLocal: number;
  /** Input bytes moved to its node (migrated) before it ran. */
  bytesMoved: number;
  placement?: { reason: string };
  /** Why the task's last attempt failed (kept while it retries; the final error once failed). */
  error?: { code: string; message: string };
}

export interface JobProgress {
  epoch?: number;
  step?: number;
  loss?: number;
  samplesPerSec?: number;
  etaMs?: number;
  /** Train: rank 0's mean per-step time so far, split by where it goes. */
  stepMs?: StepTimes;
}

/** Per-step time of one rank, in ms (means over its steps). */
export interface StepTimes {
  /** Gradient graph and optimizer. */
  compute: number;
  /** allReduce of the gradients through the stores. */
  exchange: number;
  /** Waiting for the loader's next batch. */
  waiting: number;
}

/** What one rank of a train job reports. */
export interface RankResult {
  rank: number;
  node: string;
  rows: number;
  steps: number;
  /** SHA-256 of the final parameters (identical on every rank). */
  paramsSha256: string;
  stepMs: StepTimes;
  /** The step it started from (0, or the checkpoint's after a restart). */
  resumedFrom: number;
}

export interface JobResult {
  model?: string;
  metrics?: { accuracy?: number; loss?: number };
  output?: string;
  /** Train: each rank's figures, in rank order. */
  ranks?: RankResult[];
  /** Train: ranks × batchSize. */
  effectiveBatch?: number;
}

/** Where a train job's ranks run and what each reads (the current group's). */
export interface RankPlacementInfo {
  rank: number;
  node: string;
  shards: number;
  bytes: number;
  bytesLocal: number;
  bytesMoved: number;
}

export interface Job {
  id: string;
  kind: JobKind;
  state: JobState;
  /** Why it waits or failed, in words. */
  reason?: string;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  spec: JobSpec;
  tasks: TaskInfo[];
  progress?: JobProgress;
  result?: JobResult;
  error?: { code: string; message: string };
  /** Things the submitter should know, e.g. that the ranks change the effective batch. */
  warnings?: string[];
  /** Train: the ranks' placement in the current group. */
  placement?: RankPlacementInfo[];
  /** Train: times the group restarted after losing a rank. */
  restarts?: number;
}

/** What each event type carries (the SSE `data:` line is this, as JSON). */
export interface JobEventData {
  /** The job changed state; the event carrying a final state is the last of the log. */
  state: { state: JobState; reason?: string; error?: { code: string; message: string }; result?: JobResult };
  progress: JobProgress;
  /** One task changed (placed, started, retried, finished): its whole record. */
  task: TaskInfo;
  /** One line of the job's log (no newline); logs() is these lines, each followed by a newline. */
  log: { line: string; task?: number };
}

export type JobEventType = keyof JobEventData;

/**
 * One entry of a job's event log; `id` orders them and is what SSE's
 * Last-Event-ID names: opaque to the API and its clients, unique within a job,
 * and accepted back by events() as `afterId`.
 */
export type JobEvent = { [T in JobEventType]: { id: string; type: T; data: JobEventData[T] } }[JobEventType];

export interface JobFilter {
  state?: JobState;
  kind?: JobKind;
  limit?: number;
}

export interface NodeInfo {
  name: string;
  instanceId: number;
  memoryUsed: number;
  memoryLimit: number;
  queue: { waiting: number; active: number };
}

export interface DatasetInfo {
  name: string;
  shards: { id: string; node: string; nbytes: number }[];
  bytesByNode: Record<string, number>;
}

/**
 * What the API needs from the engine. Every method throws TrellisError with a
 * code from src/errors.ts (ERR_BAD_REQUEST for a bad spec field;
 * ERR_NAME_NOT_FOUND for an unknown dataset or model; ERR_HANDLER_NOT_FOUND
 * for a map handler no live agent offers; ERR_JOB_NOT_FOUND for an unknown
 * id; ...). src/jobs/engine.ts implements it (startJobService).
 */
export interface JobService {
  /** Validated spec in; `created` is false when a job with the same id existed (same job back). */
  submit(spec: JobSpec): Promise<{ job: Job; created: boolean }>;
  get(id: string): Promise<Job>;
  list(filter: JobFilter): Promise<Job[]>;
  /** Asks running tasks to stop (AbortSignal); resolves once the request is recorded. */
  cancel(id: string): Promise<Job>;
  /**
   * The job's events after `afterId` (all when undefined), then live ones as
   * they happen; the iterator ends after the event that carries a final state.
   * `signal` ends it early (the HTTP client went away).
   */
  events(id: string, afterId: string | undefined, signal: AbortSignal): AsyncIterable<JobEvent>;
  logs(id: string): Promise<string>;
  nodes(): Promise<NodeInfo[]>;
  dataset(name: string): Promise<DatasetInfo>;
  /** Every named dataset (a name bound to a dataset object), by name, at most `limit` (default 100). */
  datasets(limit?: number): Promise<DatasetInfo[]>;
  /**
   * Resolves when the service can do its work: a store and Redis answer
   * (ERR_STORE_UNAVAILABLE, ERR_QUEUE_UNAVAILABLE otherwise); GET /readyz.
   */
  ready(): Promise<void>;
  close(): Promise<void>;
}
