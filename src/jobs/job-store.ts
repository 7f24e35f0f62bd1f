/**
 * Jobs in Redis: the job records, their task records, the indexes that
 * list(filter) reads, each job's event stream and logs, and the registry of
 * live agents. Every process of a deployment (API, agents) opens its own
 * JobStore over the same Redis and key prefix; state lives only here, so an
 * API or agent can die and another pick up where it left off.
 *
 * Key layout (P = the deployment prefix, e.g. `trellis:prod`):
 *   P:seq                     submit counter (orders everything)
 *   P:job:ID                  hash: the job record (spec, state, times, counters)
 *   P:job:ID:task:I           hash: task I (state, node, attempts, lease, bytes, output); none yet = waiting
 *   P:job:ID:events           stream: JobEvents; the entry id is JobEvent.id
 *   P:job:ID:logs             list: log lines (capped)
 *   P:jobs                    zset by seq: every job, for list()
 *   P:jobs:state:S, P:jobs:kind:K   zsets by seq: list(filter)
 *   P:admit                   zset: queued jobs by (priority desc, seq)
 *   P:running                 set: running jobs
 *   P:node:NAME               string with TTL: an agent's heartbeat (NodeBeat JSON)
 *   P:nodes                   set: node names ever seen (the heartbeats say who is live)
 *   P:scheduler               string with TTL: which API process schedules
 *   P:stale                   set: [node, BullMQ id] of tasks of restarted groups still locked by a dead agent
 *   P:bull:*                  BullMQ (one queue per node, `node-NAME`)
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { invalidParameter, TrellisError } from '../errors.js';
import { NOTE, RESTART, SUBMIT, TASK, TRANSITION } from './job-scripts.js';
import {
  FINAL_STATES,
  type Job,
  type JobEvent,
  type JobEventType,
  type JobFilter,
  type JobKind,
  type JobProgress,
  type JobSpec,
  type JobState,
  type TaskInfo,
  type TaskState,
} from './job-types.js';
import type { RankAssignment } from './rank-placement.js';

const LOG_LINES_KEPT = 10_000;
/** How long a blocking XREAD waits before it looks at the abort signal again. */
const EVENT_BLOCK_MS = 1000;

export const isFinal = (s: string): boolean => (FINAL_STATES as readonly string[]).includes(s);

/** An agent's heartbeat: who it is and what it can run. */
export interface NodeBeat {
  name: string;
  instanceId: number;
  storeId: string;
  concurrency: number;
  handlers: string[];
  pid: number;
  at: number;
  /** The agent's heartbeat period (its key lives 5 of them); absent from agents older than it: 1000. */
  beatMs?: number;
}

/** A task record as stored; the public TaskInfo plus what the engine needs. */
export interface TaskRecord extends TaskInfo {
  outputId?: string;
  result?: Job['result'];
  lease?: string;
}

export type TaskMode = 'place' | 'claim' | 'commit' | 'retry' | 'settle' | 'requeue';

/** Fields of a task record a script may set ('' deletes). */
export interface TaskFields {
  state?: TaskState;
  node?: string;
  placement?: string;
  bytesLocal?: number;
  bytesMoved?: number;
  outputId?: string;
  result?: string;
  error?: string;
  lease?: string;
  /** Train ranks: the group attempt the change belongs to (refused when the group restarted since). */
  gang?: number;
}

type Scripted = {
  trellisSubmit(...a: (string | number)[]): Promise<number>;
  trellisTransition(...a: (string | number)[]): Promise<number>;
  trellisNote(...a: (string | number)[]): Promise<number>;
  trellisTask(...a: (string | number)[]): Promise<number>;
  trellisRestart(...a: (string | number)[]): Promise<string[] | null>;
};

/** Redis connection options the jobs layer uses everywhere (BullMQ needs maxRetriesPerRequest null). */
export function redisOptions(url: string): { host: string; port: number; password?: string; db?: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalidParameter('redis', 'a URL such as redis://HOST:PORT', url);
  }
  if (u.protocol !== 'redis:') throw invalidParameter('redis', 'a redis://HOST:PORT URL', url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(db !== undefined && Number.isSafeInteger(db) ? { db } : {}),
  };
}

export function openRedis(url: string, name: string): Redis {
  const r = new Redis({ ...redisOptions(url), maxRetriesPerRequest: null, connectionName: name, lazyConnect: true });
  // ioredis reconnects by itself; an 'error' listener keeps a down Redis from crashing the process.
  r.on('error', () => {});
  return r;
}

export function newJobId(): string {
  return `j-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

function parse<T>(s: string | undefined): T | undefined {
  return s === undefined || s === '' ? undefined : (JSON.parse(s) as T);
}

export class JobStore {
  readonly redis: Redis;
  private readonly scripts: Scripted;
  private closing?: Promise<void>;

  private constructor(
    redis: Redis,
    readonly prefix: string,
  ) {
    this.redis = redis;
    redis.defineCommand('trellisSubmit', { numberOfKeys: 0, lua: SUBMIT });
    redis.defineCommand('trellisTransition', { numberOfKeys: 0, lua: TRANSITION });
    redis.defineCommand('trellisNote', { numberOfKeys: 0, lua: NOTE });
    redis.defineCommand('trellisTask', { numberOfKeys: 0, lua: TASK });
    redis.defineCommand('trellisRestart', { numberOfKeys: 0, lua: RESTART });
    this.scripts = redis as unknown as Scripted;
  }

  static async open(url: string, prefix: string, name = 'trellis jobs'): Promise<JobStore> {
    if (!/^[A-Za-z0-9._:-]+$/.test(prefix))
      throw invalidParameter('prefix', 'letters, digits, ".", "_", ":", "-"', prefix);
    const redis = openRedis(url, name);
    await redis.connect();
    return new JobStore(redis, prefix);
  }

  key(...parts: (string | number)[]): string {
    return [this.prefix, ...parts].join(':');
  }

  /** BullMQ's prefix for this deployment's queues. */
  get bullPrefix(): string {
    return this.key('bull');
  }

  // ---- jobs ------------------------------------------------------------------

  /**
   * Creates the job unless its id exists; `created` false means the id was
   * taken and the existing job is returned untouched (idempotent submit).
   */
  async create(
    id: string,
    spec: JobSpec,
    shards: string[],
    ntasks: number,
    reason: string,
    warnings: string[] = [],
  ): Promise<{ job: Job; created: boolean }> {
    const createdAt = new Date().toISOString();
    const fields: Record<string, string> = {
      spec: JSON.stringify(spec),
      shards: JSON.stringify(shards),
      ntasks: String(ntasks),
      createdAt,
      reason,
      priority: String(spec.priority ?? 0),
    };
    // A train job's ranks form a group; its attempt counts restarts (see RESTART).
    if (spec.kind === 'train') Object.assign(fields, { gang: '1', restarts: '0' });
    if (warnings.length) fields.warnings = JSON.stringify(warnings);
    const created = await this.scripts.trellisSubmit(
      this.prefix,
      id,
      spec.kind,
      JSON.stringify(fields),
      spec.priority ?? 0,
      JSON.stringify({ state: 'queued', reason }),
    );
    return { job: await this.get(id), created: created === 1 };
  }

  /**
   * The state and group attempt (train jobs; 0 for others) of each job, in
   * one round trip (state undefined for a job that does not exist).
   */
  async states(ids: string[]): Promise<{ state?: string; gang: number }[]> {
    const p = this.redis.pipeline();
    for (const id of ids) p.hmget(this.key('job', id), 'state', 'gang');
    return ((await p.exec()) ?? []).map(([, v]) => {
      const [state, gang] = (v as (string | null)[] | null) ?? [null, null];
      return { ...(state ? { state } : {}), gang: Number(gang ?? 0) };
    });
  }

  /**
   * Restarts a train job's group if its attempt is still `attempt`: every
   * task waits again (see RESTART). Returns the old tasks' nodes by index
   * ('' for one never placed), or undefined when refused.
   */
  async restartGroup(id: string, attempt: number, ntasks: number, reason: string): Promise<string[] | undefined> {
    const event = JSON.stringify({ state: 'running', reason });
    const r = await this.scripts.trellisRestart(this.prefix, id, attempt, ntasks, event);
    if (!r) return undefined;
    await this.note(id, 'running', reason);
    return r;
  }

  /** Records the ranks' assignment of group `attempt` (no-op once the group restarted). */
  async assign(id: string, attempt: number, value: RankAssignment[]): Promise<void> {
    await this.redis.eval(
      "if redis.call('HGET', KEYS[1], 'gang') == ARGV[1] then redis.call('HSET', KEYS[1], 'assign', ARGV[2]) end return 0",
      1,
      this.key('job', id),
      String(attempt),
      JSON.stringify(value),
    );
  }

  /** BullMQ ids (with their node) whose removal waits for a lock held by a dead agent. */
  async staleTasks(): Promise<{ node: string; bullId: string }[]> {
    const all = await this.redis.smembers(this.key('stale'));
    return all.map((s) => {
      const [node, bullId] = JSON.parse(s) as [string, string];
      return { node, bullId };
    });
  }

  async markStale(node: string, bullId: string): Promise<void> {
    await this.redis.sadd(this.key('stale'), JSON.stringify([node, bullId]));
  }

  async dropStale(node: string, bullId: string): Promise<void> {
    await this.redis.srem(this.key('stale'), JSON.stringify([node, bullId]));
  }

  /** The output id a task's committed attempt recorded, if any. */
  async committedOutput(id: string, index: number): Promise<string | undefined> {
    return (await this.redis.hget(this.key('job', id, 'task', index), 'outputId')) ?? undefined;
  }

  async record(id: string): Promise<Record<string, string> | undefined> {
    const h = await this.redis.hgetall(this.key('job', id));
    return h.state === undefined ? undefined : h;
  }

  /** The fields the scheduler reads every tick (not the spec and shard list), or undefined. */
  async schedulingState(id: string): Promise<Record<string, string> | undefined> {
    const fields = ['state', 'reason', 'startedAt', 'nsucceeded', 'nfailed', 'ncancelled', 'gang'] as const;
    const v = await this.redis.hmget(this.key('job', id), ...fields);
    if (v[0] === null) return undefined;
    const out: Record<string, string> = {};
    fields.forEach((f, i) => {
      if (v[i] !== null) out[f] = v[i] as string;
    });
    return out;
  }

  async get(id: string): Promise<Job> {
    const h = await this.record(id);
    if (!h) throw new TrellisError('ERR_JOB_NOT_FOUND', `no job ${JSON.stringify(id)}`);
    const tasks = await this.tasks(id, Number(h.ntasks));
    return toJob(h, tasks);
  }

  /** Task records 0..n-1 in one round trip; a task with no record yet is waiting (records appear on placement). */
  async tasks(id: string, n: number): Promise<TaskRecord[]> {
    if (n === 0) return [];
    const p = this.redis.pipeline();
    for (let i = 0; i < n; i++) p.hgetall(this.key('job', id, 'task', i));
    const res = (await p.exec()) ?? [];
    return res.map(([err, h], index) => {
      if (err) throw err;
      return toTask(index, h as Record<string, string>);
    });
  }

  async list(filter: JobFilter): Promise<Job[]> {
    const limit = filter.limit ?? 100;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000)
      throw invalidParameter('limit', 'an integer from 1 to 1000', limit);
    const index = filter.state
      ? this.key('jobs', 'state', filter.state)
      : filter.kind
        ? this.key('jobs', 'kind', filter.kind)
        : this.key('jobs');
    const out: Job[] = [];
    const page = Math.max(limit, 50);
    for (let start = 0; out.length < limit; start += page) {
      const ids = await this.redis.zrevrange(index, start, start + page - 1);
      for (const id of ids) {
        const h = await this.record(id);
        if (!h || (filter.kind && h.kind !== filter.kind) || (filter.state && h.state !== filter.state)) continue;
        out.push(toJob(h, await this.tasks(id, Number(h.ntasks))));
        if (out.length === limit) break;
      }
      if (ids.length < page) break;
    }
    return out;
  }

  /**
   * Checked transition: refused (false) when the job is final already or not
   * in one of `from`. `fields` are set, `drop` deleted, and a state event
   * with `event` (plus the state) is appended, all at once.
   */
  async transition(
    id: string,
    to: JobState,
    from: JobState[],
    fields: Record<string, string> = {},
    drop: string[] = [],
    event: Record<string, unknown> = {},
  ): Promise<boolean> {
    const r = await this.scripts.trellisTransition(
      this.prefix,
      id,
      to,
      from.join(' '),
      JSON.stringify(fields),
      drop.join(' '),
      JSON.stringify({ state: to, ...event }),
    );
    if (r === -1) throw new TrellisError('ERR_JOB_NOT_FOUND', `no job ${JSON.stringify(id)}`);
    return r === 1;
  }

  /** Sets what a queued or running job waits for, if it is still in `state`. */
  async note(id: string, state: JobState, reason: string): Promise<void> {
    await this.scripts.trellisNote(this.prefix, id, state, reason);
  }

  /** One task change through the fenced script (see job-scripts.ts TASK for the modes and answers). */
  task(id: string, index: number, mode: TaskMode, lease: string, fields: TaskFields): Promise<number> {
    return this.scripts.trellisTask(this.prefix, id, index, mode, lease, JSON.stringify(stringify(fields)));
  }

  /** Many 'place' changes in one round trip. */
  async placeMany(items: { id: string; index: number; fields: TaskFields }[]): Promise<void> {
    const p = this.redis.pipeline() as unknown as Scripted & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const it of items)
      void p.trellisTask(this.prefix, it.id, it.index, 'place', '', JSON.stringify(stringify(it.fields)));
    for (const [err] of (await p.exec()) ?? []) if (err) throw err;
  }

  async queuedIds(limit = 1000): Promise<string[]> {
    return this.redis.zrange(this.key('admit'), '0', String(limit - 1));
  }

  async runningIds(): Promise<string[]> {
    return this.redis.smembers(this.key('running'));
  }

  // ---- progress, logs, events -----------------------------------------------

  async progress(id: string, p: JobProgress): Promise<void> {
    const data = JSON.stringify(p);
    await this.redis
      .multi()
      .hset(this.key('job', id), 'progress', data)
      .xadd(this.key('job', id, 'events'), '*', 'type', 'progress', 'data', data)
      .exec();
  }

  async log(id: string, line: string): Promise<void> {
    const text = `${new Date().toISOString()} ${line}`;
    await this.redis
      .multi()
      .rpush(this.key('job', id, 'logs'), text)
      .ltrim(this.key('job', id, 'logs'), -LOG_LINES_KEPT, -1)
      .xadd(this.key('job', id, 'events'), '*', 'type', 'log', 'data', JSON.stringify({ line: text }))
      .exec();
  }

  async logs(id: string): Promise<string> {
    if (!(await this.redis.exists(this.key('job', id))))
      throw new TrellisError('ERR_JOB_NOT_FOUND', `no job ${JSON.stringify(id)}`);
    const lines = await this.redis.lrange(this.key('job', id, 'logs'), 0, -1);
    return lines.length ? `${lines.join('\n')}\n` : '';
  }

  /**
   * The job's events after `afterId`, then live ones (XREAD BLOCK on a
   * connection of its own), ending after the event with a final state or when
   * `signal` aborts.
   */
  async *events(id: string, afterId: string | undefined, signal: AbortSignal): AsyncGenerator<JobEvent> {
    if (!(await this.redis.exists(this.key('job', id))))
      throw new TrellisError('ERR_JOB_NOT_FOUND', `no job ${JSON.stringify(id)}`);
    if (afterId !== undefined && !/^\d+-\d+$/.test(afterId))
      throw invalidParameter('Last-Event-ID', 'an event id such as 1733040000000-0', afterId);
    const stream = this.key('job', id, 'events');
    const ended = async () => isFinal((await this.redis.hget(this.key('job', id), 'state')) ?? '');
    let last = afterId ?? '0-0';
    // Nothing past the final event is sent: a job that has ended may have task events after
    // it (tasks stopping), and a client resuming after the final event gets nothing.
    if (await ended()) {
      const held: JobEvent[] = [];
      for (;;) {
        const page = await this.redis.xrange(stream, `(${last}`, '+', 'COUNT', 500);
        for (const [eid, f] of page) {
          held.push(toEvent(eid, f));
          last = eid;
          if (isFinalEvent(held[held.length - 1])) {
            yield* held;
            return;
          }
        }
        if (page.length < 500 || signal.aborted) return;
      }
    }
    for (;;) {
      if (signal.aborted) return;
      const page = await this.redis.xrange(stream, `(${last}`, '+', 'COUNT', 500);
      for (const [eid, f] of page) {
        const ev = toEvent(eid, f);
        last = eid;
        yield ev;
        if (isFinalEvent(ev)) return;
      }
      if (page.length < 500) break;
    }
    if (await ended()) {
      // It ended between the reads: its final event is in the tail.
      const tail = (await this.redis.xrange(stream, `(${last}`, '+')).map(([eid, f]) => toEvent(eid, f));
      for (const ev of tail.slice(0, tail.findIndex(isFinalEvent) + 1)) yield ev;
      return;
    }
    const blocking = this.redis.duplicate({ connectionName: 'trellis events' });
    blocking.on('error', () => {});
    const onAbort = () => blocking.disconnect();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal.aborted) {
        let res: [string, [string, string[]][]][] | null;
        try {
          res = (await blocking.xread('COUNT', 500, 'BLOCK', EVENT_BLOCK_MS, 'STREAMS', stream, last)) as typeof res;
        } catch (e) {
          if (signal.aborted) return;
          throw e;
        }
        for (const [, entries] of res ?? []) {
          for (const [eid, f] of entries) {
            const ev = toEvent(eid, f);
            last = eid;
            yield ev;
            if (isFinalEvent(ev)) return;
          }
        }
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      blocking.disconnect();
    }
  }

  // ---- agents ----------------------------------------------------------------

  async beat(b: NodeBeat, ttlMs: number): Promise<void> {
    await this.redis
      .multi()
      .set(this.key('node', b.name), JSON.stringify(b), 'PX', ttlMs)
      .sadd(this.key('nodes'), b.name)
      .exec();
  }

  async dropBeat(name: string): Promise<void> {
    await this.redis.del(this.key('node', name));
  }

  /** Node names seen, live or not. */
  knownNodes(): Promise<string[]> {
    return this.redis.smembers(this.key('nodes'));
  }

  /** Forgets a node that left (it comes back with its next heartbeat). */
  async forgetNode(name: string): Promise<void> {
    await this.redis.srem(this.key('nodes'), name);
  }

  /** Agents whose heartbeat has not expired, by name. */
  async liveNodes(): Promise<NodeBeat[]> {
    const names = (await this.redis.smembers(this.key('nodes'))).sort();
    if (names.length === 0) return [];
    const beats = await this.redis.mget(names.map((n) => this.key('node', n)));
    return beats.filter((b): b is string => b !== null).map((b) => JSON.parse(b) as NodeBeat);
  }

  close(): Promise<void> {
    this.closing ??= this.redis.quit().then(
      () => {},
      () => this.redis.disconnect(),
    );
    return this.closing;
  }
}

function stringify(fields: TaskFields): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = String(v);
  return out;
}

function toTask(index: number, t: Record<string, string>): TaskRecord {
  return {
    index,
    node: t.node ?? '',
    state: (t.state ?? 'waiting') as TaskState,
    attempts: Number(t.attempts ?? 0),
    bytesLocal: Number(t.bytesLocal ?? 0),
    bytesMoved: Number(t.bytesMoved ?? 0),
    ...(t.placement ? { placement: { reason: t.placement } } : {}),
    ...(t.error ? { error: JSON.parse(t.error) } : {}),
    ...(t.outputId ? { outputId: t.outputId } : {}),
    ...(t.result ? { result: JSON.parse(t.result) } : {}),
    ...(t.lease ? { lease: t.lease } : {}),
  };
}

function toJob(h: Record<string, string>, tasks: TaskRecord[]): Job {
  const job: Job = {
    id: h.id,
    kind: h.kind as JobKind,
    state: h.state as JobState,
    createdAt: h.createdAt,
    spec: JSON.parse(h.spec) as JobSpec,
    tasks: tasks.map(({ outputId: _o, result: _r, lease: _l, ...info }) => info),
  };
  if (h.reason) job.reason = h.reason;
  if (h.startedAt) job.startedAt = h.startedAt;
  if (h.endedAt) job.endedAt = h.endedAt;
  const progress = parse<JobProgress>(h.progress);
  if (progress) job.progress = progress;
  const result = parse<Job['result']>(h.result);
  if (result) job.result = result;
  const error = parse<Job['error']>(h.error);
  if (error) job.error = error;
  const warnings = parse<string[]>(h.warnings);
  if (warnings) job.warnings = warnings;
  const assign = parse<RankAssignment[]>(h.assign);
  if (assign) job.placement = assign.map((a) => ({ ...a, shards: a.shards.length }));
  if (h.restarts !== undefined) job.restarts = Number(h.restarts);
  return job;
}

function toEvent(id: string, fields: string[]): JobEvent {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]] = fields[i + 1];
  return { id, type: f.type as JobEventType, data: JSON.parse(f.data ?? 'null') };
}

function isFinalEvent(ev: JobEvent): boolean {
  return ev.type === 'state' && isFinal((ev.data as { state?: string }).state ?? '');
}
