/**
 * The scheduler, inside the API process. Each tick it:
 *   1. admits queued jobs while fewer than maxRunningJobs run (priority, then
 *      submit order) and says in each waiting job's reason what it waits for;
 *   2. places each waiting task of a running job on the queue of the node that
 *      holds most of its input bytes, less a penalty per task queued there
 *      (delay scheduling: if that node rejects work, the task waits up to
 *      localityWaitMs, counted only while it rejects, then goes elsewhere and
 *      the agent there migrates the input);
 *   3. ends jobs: succeeded when every task committed (map/infer outputs
 *      become a dataset), failed on a task's final failure or on timeout.
 * All state is in Redis (JobStore); a restarted API picks up every job. Only
 * one API process schedules at a time (a lock key with a TTL).
 *
 * Why no BullMQ flow: a job's tasks are placed one by one as nodes free up,
 * long after submit, so there is no moment at which one up-front flow
 * (parent + children on fixed queues) could be added. Completion is counted
 * by the fenced task commits in Redis instead, and the scheduler ends the
 * job as soon as a task fails for good, so no job waits on a failed task.
 */
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { asTrellisError, isTrellisError } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import { BeatWatch, type Suspects } from './beat-watch.js';
import type { ClusterView, ShardPlace } from './cluster-view.js';
import { groupLost, MAX_RESTARTS_DEFAULT } from './group-restart.js';
import { isFinal, type JobStore, type NodeBeat, type TaskFields, type TaskRecord } from './job-store.js';
import type { JobResult, JobSpec, RankResult, TrainJobSpec } from './job-types.js';
import { bullConnection, queueName, taskJobId } from './node-queue.js';
import { describeRank, placeRanks, type RankAssignment, shardHolders } from './rank-placement.js';
import type { TaskPayload } from './task-types.js';

export interface SchedulerOptions {
  /** Jobs running at once; the rest wait in priority then submit order (default 4). */
  maxRunningJobs: number;
  /** How long a task waits for its busy preferred node before it runs elsewhere (default 3000). */
  localityWaitMs: number;
  /** A node whose queue holds this many tasks (waiting + active) rejects more (default 256). */
  nodeQueueCap: number;
  /**
   * Placement score: the task's input bytes on the node, minus this fraction
   * of its input per task queued there (default 0.002). Small enough that a
   * node holding the input stays preferred until it rejects work (the cap and
   * the locality wait decide spills); it breaks ties between nodes holding
   * similar shares toward the shorter queue.
   */
  queuePenalty: number;
  /** Retry backoff of a task's first retry; doubles each time (default 1000). */
  backoffMs: number;
  /** Retries per task when the spec does not say (default 2). */
  defaultMaxRetries: number;
  tickMs: number;
  /**
   * 'locality' (default), or 'round-robin': tasks dealt to the nodes in turn,
   * ignoring where the data is and how busy a node is; the baseline that
   * bench/job-locality.js compares against, not meant for use.
   */
  placement: 'locality' | 'round-robin';
}

export const SCHEDULER_DEFAULTS: SchedulerOptions = {
  maxRunningJobs: 4,
  localityWaitMs: 3000,
  nodeQueueCap: 256,
  queuePenalty: 0.002,
  backoffMs: 1000,
  defaultMaxRetries: 2,
  tickMs: 100,
  placement: 'locality',
};

/** What the engine logs through: a pino logger (or any with these methods); lines carry jobId and task as fields. */
export type EngineLogger = Pick<Logger, 'info' | 'warn' | 'error'>;

const LEADER_TTL_MS = 3000;
/** How often tasks on nodes whose agent is gone are looked for. */
const RESCUE_EVERY_MS = 1000;
const ADD_BATCH = 50;
const ADD_LANES = 8;

/** What the scheduler remembers about a running job between ticks (rebuilt after a restart). */
interface RunningJob {
  spec: JobSpec;
  inputs: string[][];
  places?: Map<string, ShardPlace>;
  waiting: Set<number>;
  /** Per waiting task: ms it has waited while its preferred node rejected work. */
  waited: Map<number, number>;
  reason?: string;
  /**
   * Train: the group's attempt, once placed its ranks' assignment; after a
   * restart, the nodes whose agents did not report the failure (placed on
   * once their heartbeat says they live), and those left out of this attempt.
   */
  gang?: { attempt: number; assign?: RankAssignment[]; suspects?: Suspects; excluded?: Excluded };
}

/**
 * Nodes a restarted group is not placed on, each with its heartbeat's `at`
 * when it was left out (undefined: it had none): a node that beats again
 * after that (its agent restarted) is a candidate again.
 */
type Excluded = Map<string, number | undefined>;

/**
 * The input shard ids of each task: one shard per map/infer task; for train,
 * one (still empty) list per rank: the ranks' shares are decided when the
 * group is placed, from where the shards are then.
 */
export function taskInputs(spec: JobSpec, shards: string[]): string[][] {
  return spec.kind === 'train' ? Array.from({ length: spec.ranks ?? 1 }, () => []) : shards.map((s) => [s]);
}

export function fmtBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export class Scheduler {
  private readonly opts: SchedulerOptions;
  private readonly queues = new Map<string, Queue>();
  private readonly jobs = new Map<string, RunningJob>();
  private readonly token = randomBytes(8).toString('hex');
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private again = false;
  private lastTick = Date.now();
  private lastRescue = 0;
  /** Round-robin placement's next node. */
  private dealt = 0;
  private leader = false;
  private readonly beats = new BeatWatch();
  private closed = false;
  private closing?: Promise<void>;

  constructor(
    private readonly store: JobStore,
    private readonly cluster: ClusterView,
    private readonly redisUrl: string,
    opts: Partial<SchedulerOptions>,
    private readonly log: EngineLogger,
  ) {
    this.opts = { ...SCHEDULER_DEFAULTS, ...opts };
  }

  get options(): Readonly<SchedulerOptions> {
    return this.opts;
  }

  start(): void {
    this.schedule(0);
  }

  /** Runs a tick soon (after a submit or cancel), without waiting for the timer. */
  wake(): void {
    if (this.ticking) this.again = true;
    else this.schedule(0);
  }

  queue(node: string): Queue {
    let q = this.queues.get(node);
    if (!q) {
      q = new Queue(queueName(node), { connection: bullConnection(this.redisUrl), prefix: this.store.bullPrefix });
      q.on('error', () => {});
      this.queues.set(node, q);
    }
    return q;
  }

  /** Waiting (incl. delayed and prioritized) and active tasks on a node's queue. */
  async queueCounts(node: string): Promise<{ waiting: number; active: number }> {
    const c = await this.queue(node).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
    return { waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0), active: c.active ?? 0 };
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.ticking = this.tick()
        .catch((e) =>
          this.log.warn({ code: (e as { code?: unknown }).code }, `scheduler tick failed: ${(e as Error).message}`),
        )
        .finally(() => {
          this.ticking = undefined;
          const now = this.again;
          this.again = false;
          this.schedule(now ? 0 : this.opts.tickMs);
        });
    }, ms);
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    const elapsed = now - this.lastTick;
    this.lastTick = now;
    if (!(await this.holdLeadership())) return;
    await this.admit();
    const nodes = await this.store.liveNodes();
    this.beats.observe(nodes, now);
    const load = new Map<string, number>();
    await Promise.all(
      nodes.map(async (n) => {
        const c = await this.queueCounts(n.name);
        load.set(n.name, c.waiting + c.active);
      }),
    );
    const running = await this.store.runningIds();
    if (now - this.lastRescue >= RESCUE_EVERY_MS) {
      this.lastRescue = now;
      await this.rescue(running, nodes);
    }
    for (const id of running) {
      if (this.closed) return;
      try {
        await this.step(id, nodes, load, elapsed);
      } catch (e) {
        this.log.warn(
          { jobId: id, code: (e as { code?: unknown }).code },
          `scheduling failed: ${(e as Error).message}`,
        );
      }
    }
  }

  /**
   * Tasks placed on a node whose agent is gone (its heartbeat expired, or it
   * left with a drain) go back to waiting and are placed again elsewhere,
   * once BullMQ lets go of them: a task still locked by the dead agent is
   * freed by its lock's expiry, and a restarted agent that comes back in
   * time (before its heartbeat expires) keeps its tasks.
   */
  private async rescue(running: string[], nodes: NodeBeat[]): Promise<void> {
    await this.sweepStale();
    const live = new Set(nodes.map((n) => n.name));
    const dead = (await this.store.knownNodes()).filter((n) => !live.has(n));
    if (dead.length === 0) return;
    const stuck = new Set<string>();
    for (const id of running) {
      const rj = await this.running(id);
      if (!rj) continue;
      const tasks = await this.store.tasks(id, rj.inputs.length);
      if (rj.gang) {
        // A rank cannot be replaced alone (its group waits on it in every exchange): the whole group restarts.
        const lost = tasks.find((t) => (t.state === 'placed' || t.state === 'running') && dead.includes(t.node));
        if (lost) await this.restartGroup(id, rj, `rank ${lost.index}'s agent on ${lost.node} is gone`, tasks);
        continue;
      }
      for (const t of tasks) {
        if ((t.state !== 'placed' && t.state !== 'running') || !dead.includes(t.node)) continue;
        if (!(await this.unqueue(t.node, taskJobId(id, t.index)))) {
          stuck.add(t.node); // still locked by the dead agent: its lock expires, then we move it
          continue;
        }
        const ok = await this.store.task(id, t.index, 'requeue', '', {
          state: 'waiting',
          lease: '',
          placement: `${t.node}'s agent is gone; placed again`,
        });
        if (ok === 1) rj.waiting.add(t.index);
        this.log.warn({ jobId: id, task: t.index, node: t.node }, "the node's agent is gone; placing the task again");
      }
    }
    for (const n of dead) if (!stuck.has(n)) await this.store.forgetNode(n);
  }

  /** One API process schedules; the lock's TTL hands over to another within LEADER_TTL_MS of a crash. */
  private async holdLeadership(): Promise<boolean> {
    const key = this.store.key('scheduler');
    const r = this.store.redis;
    if (this.leader) {
      const kept = await r.eval(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
        1,
        key,
        this.token,
        LEADER_TTL_MS,
      );
      this.leader = kept === 1;
    } else {
      this.leader = (await r.set(key, this.token, 'PX', LEADER_TTL_MS, 'NX')) === 'OK';
      if (this.leader) this.jobs.clear();
    }
    return this.leader;
  }

  private async admit(): Promise<void> {
    const running = await this.store.runningIds();
    let slots = this.opts.maxRunningJobs - running.length;
    const queued = await this.store.queuedIds();
    let ahead = 0;
    for (const id of queued) {
      if (slots > 0) {
        const h = await this.store.record(id);
        if (!h) continue;
        const started = await this.store.transition(
          id,
          'running',
          ['queued'],
          { startedAt: new Date().toISOString(), reason: `placing ${h.ntasks} tasks` },
          [],
          {},
        );
        if (started) {
          slots--;
          // Just started: every task is waiting, no need to read their (absent) records.
          const spec = JSON.parse(h.spec) as JobSpec;
          const inputs = taskInputs(spec, JSON.parse(h.shards) as string[]);
          this.jobs.set(id, {
            spec,
            inputs,
            waiting: new Set(inputs.keys()),
            waited: new Map(),
            ...(spec.kind === 'train' ? { gang: { attempt: Number(h.gang ?? 1) } } : {}),
          });
        }
        continue;
      }
      const busy = this.opts.maxRunningJobs - slots;
      await this.store.note(
        id,
        'queued',
        `waiting for a running slot: ${busy} of ${this.opts.maxRunningJobs} running` +
          (ahead ? `, ${ahead} queued ahead of it` : ''),
      );
      ahead++;
    }
  }

  private async running(id: string): Promise<RunningJob | undefined> {
    let rj = this.jobs.get(id);
    if (rj) return rj;
    const h = await this.store.record(id);
    if (!h || isFinal(h.state)) return undefined;
    const spec = JSON.parse(h.spec) as JobSpec;
    const inputs = taskInputs(spec, JSON.parse(h.shards) as string[]);
    const tasks = await this.store.tasks(id, inputs.length);
    rj = {
      spec,
      inputs,
      waiting: new Set(tasks.filter((t) => t.state === 'waiting').map((t) => t.index)),
      waited: new Map(),
    };
    if (spec.kind === 'train') {
      const assign = h.assign ? (JSON.parse(h.assign) as RankAssignment[]) : undefined;
      rj.gang = { attempt: Number(h.gang ?? 1), ...(assign ? { assign } : {}) };
      if (assign) for (const a of assign) inputs[a.rank] = a.shards;
    }
    this.jobs.set(id, rj);
    return rj;
  }

  private async step(id: string, nodes: NodeBeat[], load: Map<string, number>, elapsed: number): Promise<void> {
    const h = await this.store.schedulingState(id);
    if (!h || isFinal(h.state)) {
      this.jobs.delete(id);
      return;
    }
    const rj = await this.running(id);
    if (!rj) return;
    const n = rj.inputs.length;
    const timeoutMs = rj.spec.timeoutMs;
    if (timeoutMs !== undefined && h.startedAt && Date.now() - Date.parse(h.startedAt) > timeoutMs) {
      await this.fail(id, { code: 'ERR_TIMEOUT', message: `the job ran longer than its timeoutMs (${timeoutMs} ms)` });
      return;
    }
    if (rj.gang) {
      await this.stepGroup(id, rj, h, nodes, load);
      return;
    }
    if (Number(h.nfailed) > 0) {
      const failed = (await this.store.tasks(id, n)).find((t) => t.state === 'failed');
      const err = failed?.error ?? { code: 'ERR_INTERNAL', message: 'a task failed without an error' };
      await this.fail(id, { code: err.code, message: `task ${failed?.index} failed: ${err.message}` });
      return;
    }
    if (Number(h.nsucceeded) === n) {
      await this.finish(id, rj);
      return;
    }
    if (rj.waiting.size > 0) await this.place(id, rj, nodes, load, elapsed);
    const done = Number(h.nsucceeded);
    const reason = rj.reason ?? `${done} of ${n} tasks done`;
    if (reason !== h.reason) await this.store.note(id, 'running', reason);
  }

  private async place(
    id: string,
    rj: RunningJob,
    nodes: NodeBeat[],
    load: Map<string, number>,
    elapsed: number,
  ): Promise<void> {
    const spec = rj.spec;
    const candidates = spec.kind === 'map' ? nodes.filter((b) => b.handlers.includes(spec.handler)) : nodes;
    if (candidates.length === 0) {
      rj.reason = `waiting for an agent${spec.kind === 'map' ? ` with handler ${JSON.stringify(spec.handler)}` : ''}`;
      return;
    }
    rj.places ??= await this.cluster.places(spec.dataset, [...new Set(rj.inputs.flat())]);
    const byInstance = new Map(nodes.map((b) => [b.instanceId, b.name]));
    const perNode = new Map<string, { index: number; fields: TaskFields }[]>();
    const cap = this.opts.nodeQueueCap;
    let blockedOn: { node: string; waited: number } | undefined;
    let allBusy = false;
    for (const index of rj.waiting) {
      const bytes = new Map<string, number>();
      let total = 0;
      for (const s of rj.inputs[index]) {
        const p = rj.places.get(s);
        if (!p) continue;
        total += p.nbytes;
        // Every node holding a live copy (replicas too) has these bytes locally.
        for (const node of shardHolders(p.holders, byInstance)) bytes.set(node, (bytes.get(node) ?? 0) + p.nbytes);
      }
      const score = (node: string) => (bytes.get(node) ?? 0) - this.opts.queuePenalty * total * (load.get(node) ?? 0);
      const best = (list: NodeBeat[]) =>
        list.reduce<NodeBeat | undefined>((a, b) => {
          if (!a) return b;
          const d = score(b.name) - score(a.name);
          if (d !== 0) return d > 0 ? b : a;
          const l = (load.get(b.name) ?? 0) - (load.get(a.name) ?? 0);
          return l < 0 ? b : a;
        }, undefined)!;
      const preferred = best(candidates);
      const depth = (node: string) => load.get(node) ?? 0;
      const share = (node: string) => (total ? Math.round((100 * (bytes.get(node) ?? 0)) / total) : 0);
      let chosen: string | undefined;
      let why = '';
      if (this.opts.placement === 'round-robin') {
        chosen = candidates[this.dealt++ % candidates.length].name;
        why = `round-robin; ${chosen} holds ${share(chosen)}% of its ${fmtBytes(total)} input`;
      } else if (depth(preferred.name) < cap) {
        chosen = preferred.name;
        why = !total
          ? `no input bytes anywhere; ${chosen} has the shortest queue (${depth(chosen)})`
          : share(chosen) > 0
            ? `${chosen} holds ${share(chosen)}% of its ${fmtBytes(total)} input; queue ${depth(chosen)}`
            : `no node with a live agent holds its ${fmtBytes(total)} input; ${chosen} (queue ${depth(chosen)}) migrates it`;
      } else {
        const waited = (rj.waited.get(index) ?? 0) + elapsed;
        rj.waited.set(index, waited);
        const free = candidates.filter((b) => depth(b.name) < cap);
        if (waited >= this.opts.localityWaitMs && free.length > 0) {
          chosen = best(free).name;
          const moved = total - (bytes.get(chosen) ?? 0);
          why =
            `${preferred.name} holds ${share(preferred.name)}% of its ${fmtBytes(total)} input but was busy ` +
            `(queue ${depth(preferred.name)} of ${cap}) for ${(waited / 1000).toFixed(1)} s; ` +
            `${chosen} (queue ${depth(chosen)}) migrates ${fmtBytes(moved)}`;
        } else {
          if (free.length === 0) allBusy = true;
          if (!blockedOn || waited > blockedOn.waited) blockedOn = { node: preferred.name, waited };
          continue;
        }
      }
      load.set(chosen, depth(chosen) + 1);
      const list = perNode.get(chosen) ?? [];
      perNode.set(chosen, list);
      list.push({ index, fields: { state: 'placed', node: chosen, placement: why } });
    }
    for (const [node, list] of perNode) await this.enqueue(id, rj, node, list);
    const waiting = rj.waiting.size;
    rj.reason = blockedOn
      ? allBusy
        ? `${waiting} tasks waiting: every node is busy (queue cap ${cap})`
        : `${waiting} tasks waiting for ${blockedOn.node} (busy) up to ${(this.opts.localityWaitMs / 1000).toFixed(1)} s`
      : undefined;
  }

  /** Adds the tasks to the node's queue, then records them placed (a crash in between re-adds: the commit is fenced). */
  private async enqueue(
    id: string,
    rj: RunningJob,
    node: string,
    list: { index: number; fields: TaskFields }[],
    instanceOf: ReadonlyMap<string, number> = new Map(),
  ): Promise<void> {
    const q = this.queue(node);
    const spec = rj.spec;
    // A rank is never retried alone: its group restarts (stepGroup).
    const attempts = rj.gang ? 1 : (spec.maxRetries ?? this.opts.defaultMaxRetries) + 1;
    const gang = rj.gang;
    // BullMQ: 1 is the highest priority; spec priorities are higher-first around 0.
    const priority = Math.min(2 ** 21 - 1, Math.max(1, 1_000_000 - (spec.priority ?? 0)));
    const batches: { index: number; fields: TaskFields }[][] = [];
    for (let i = 0; i < list.length; i += ADD_BATCH) batches.push(list.slice(i, i + ADD_BATCH));
    const addOne = async (batch: { index: number; fields: TaskFields }[]) => {
      await q.addBulk(
        batch.map(({ index }) => {
          const data: TaskPayload = { jobId: id, index, spec, shards: rj.inputs[index] };
          if (gang?.assign) {
            data.rank = { index, count: rj.inputs.length };
            data.gang = {
              attempt: gang.attempt,
              group: `${id}.a${gang.attempt}`,
              members: gang.assign.map((a) => ({ rank: a.rank, node: a.node, instance: instanceOf.get(a.node) ?? -1 })),
            };
          }
          return {
            name: spec.kind,
            data,
            opts: {
              jobId: taskJobId(id, index, gang?.attempt),
              attempts,
              backoff: { type: 'exponential', delay: this.opts.backoffMs },
              priority,
              removeOnComplete: true,
              removeOnFail: true,
            },
          };
        }),
      );
      await this.store.placeMany(batch.map((b) => ({ id, index: b.index, fields: b.fields })));
      for (const b of batch) {
        rj.waiting.delete(b.index);
        rj.waited.delete(b.index);
      }
    };
    // A few batches in flight: each is two round trips, and Redis is idle between them otherwise.
    let next = 0;
    const lane = async () => {
      while (next < batches.length) await addOne(batches[next++]);
    };
    await Promise.all(Array.from({ length: Math.min(ADD_LANES, batches.length) }, lane));
  }

  private async fail(id: string, error: { code: string; message: string }): Promise<void> {
    await this.store.transition(
      id,
      'failed',
      ['running', 'queued'],
      { endedAt: new Date().toISOString(), error: JSON.stringify(error), reason: error.message },
      [],
      { error },
    );
    this.jobs.delete(id);
    await this.dropQueued(id);
  }

  /** Takes a task off a node's queue: true when it is gone from it (removed now, or already), false while locked. */
  private async unqueue(node: string, bullId: string): Promise<boolean> {
    const q = this.queue(node);
    return !(await q.getJob(bullId)) || (await q.remove(bullId)) === 1;
  }

  /**
   * After a job ended early (failed, cancelled): its tasks that never started
   * leave their queues and become cancelled, so they hold no queue slot.
   * Running ones see the final state within the agents' poll and stop.
   */
  async dropQueued(id: string): Promise<void> {
    const h = await this.store.record(id);
    if (!h) return;
    const attempt = h.gang === undefined ? undefined : Number(h.gang);
    for (const t of await this.store.tasks(id, Number(h.ntasks))) {
      if (t.state === 'running' && attempt !== undefined) {
        // A rank runs until its agent sees the job end; one whose agent is dead is swept later.
        await this.store.markStale(t.node, taskJobId(id, t.index, attempt));
        continue;
      }
      if (t.state !== 'waiting' && t.state !== 'placed') continue;
      if (t.state === 'placed' && !(await this.unqueue(t.node, taskJobId(id, t.index, attempt)))) {
        await this.store.markStale(t.node, taskJobId(id, t.index, attempt));
        continue;
      }
      await this.store.task(id, t.index, 'settle', '', { state: 'cancelled' });
    }
  }

  /** Removes tasks of ended jobs and restarted groups that a dead agent's lock kept in a queue. */
  private async sweepStale(): Promise<void> {
    for (const { node, bullId } of await this.store.staleTasks()) {
      if (await this.unqueue(node, bullId).catch(() => false)) await this.store.dropStale(node, bullId);
    }
  }

  // ---- train groups -------------------------------------------------------------

  /**
   * One tick of a train job: its ranks are one group, placed together, ended
   * together. A rank that failed for good (its error is not a lost rank)
   * fails the job with its code; a lost rank restarts the group from the
   * last checkpoint, up to maxRestarts times.
   */
  private async stepGroup(
    id: string,
    rj: RunningJob,
    h: Record<string, string>,
    nodes: NodeBeat[],
    load: Map<string, number>,
  ): Promise<void> {
    const n = rj.inputs.length;
    const gang = rj.gang!;
    if (Number(h.gang ?? 1) !== gang.attempt) {
      // Another scheduler restarted it: forget what we knew.
      this.jobs.delete(id);
      return;
    }
    if (Number(h.nfailed) > 0 || Number(h.ncancelled) > 0) {
      const tasks = await this.store.tasks(id, n);
      const failed = tasks.filter((t) => t.state === 'failed' || t.state === 'cancelled');
      // The root cause first: a rank that failed for good makes its peers fail with lost-peer codes.
      const fatal = failed.find((t) => !groupLost(t.error?.code ?? ''));
      if (fatal) {
        const err = fatal.error ?? { code: 'ERR_INTERNAL', message: 'a rank failed without an error' };
        await this.fail(id, { code: err.code, message: `rank ${fatal.index} failed: ${err.message}` });
        return;
      }
      const t = failed[0];
      await this.restartGroup(
        id,
        rj,
        `rank ${t.index} on ${t.node} failed: ${t.error?.code}: ${t.error?.message}`,
        tasks,
      );
      return;
    }
    if (Number(h.nsucceeded) === n) {
      await this.finish(id, rj);
      return;
    }
    if (rj.waiting.size === n) await this.placeGroup(id, rj, nodes, load);
    const reason = rj.reason ?? `${n} ranks running (group attempt ${gang.attempt})`;
    if (reason !== h.reason) await this.store.note(id, 'running', reason);
  }

  /** Places every rank of the group at once, each on the node holding its shards. */
  private async placeGroup(id: string, rj: RunningJob, nodes: NodeBeat[], load: Map<string, number>): Promise<void> {
    const spec = rj.spec as TrainJobSpec;
    const gang = rj.gang!;
    const now = Date.now();
    if (gang.suspects) {
      const pending: string[] = [];
      for (const node of gang.suspects.at.keys()) {
        const v = this.beats.verdict(node, gang.suspects, nodes, now);
        if (v === 'pending') pending.push(node);
        else {
          if (v === 'gone') gang.excluded?.set(node, gang.suspects.at.get(node));
          gang.suspects.at.delete(node);
        }
      }
      if (pending.length > 0) {
        rj.reason = `restarting: waiting for a heartbeat from ${pending.join(', ')} (a rank there did not report) before placing the new group`;
        return;
      }
      gang.suspects = undefined;
    }
    const out = (b: NodeBeat) => {
      const ex = gang.excluded;
      if (!ex?.has(b.name)) return false;
      if (ex.get(b.name) === b.at) return true;
      ex.delete(b.name); // it beat since it was left out: its agent is back
      return false;
    };
    nodes = nodes.filter((b) => this.beats.fresh(b.name, now) && !out(b));
    if (nodes.length === 0) {
      rj.reason = 'waiting for an agent';
      return;
    }
    const shardIds = JSON.parse((await this.store.record(id))?.shards ?? '[]') as string[];
    const places = await this.cluster.places(spec.dataset, shardIds);
    const nodeOf = new Map(nodes.map((b) => [b.instanceId, b.name]));
    const shards = shardIds.map((sid) => {
      const p = places.get(sid);
      return { id: sid, nbytes: p?.nbytes ?? 0, holders: p ? shardHolders(p.holders, nodeOf) : [] };
    });
    const assign = placeRanks(
      shards,
      rj.inputs.length,
      nodes.map((b) => b.name),
    );
    gang.assign = assign;
    for (const a of assign) rj.inputs[a.rank] = a.shards;
    await this.store.assign(id, gang.attempt, assign);
    const perNode = new Map<string, { index: number; fields: TaskFields }[]>();
    for (const a of assign) {
      const list = perNode.get(a.node) ?? [];
      perNode.set(a.node, list);
      list.push({
        index: a.rank,
        fields: {
          state: 'placed',
          node: a.node,
          placement: describeRank(a, assign.length, fmtBytes),
          gang: gang.attempt,
        },
      });
      load.set(a.node, (load.get(a.node) ?? 0) + 1);
    }
    const instanceOf = new Map(nodes.map((b) => [b.name, b.instanceId]));
    for (const [node, list] of perNode) await this.enqueue(id, rj, node, list, instanceOf);
    rj.reason = undefined;
  }

  /**
   * Stops the group's ranks and places a new group, or fails the job once
   * maxRestarts is spent. The new group avoids the nodes whose agent is
   * draining, and waits for a heartbeat from the nodes of ranks that did not
   * report the failure (their agent may be dead; BeatWatch decides).
   */
  private async restartGroup(id: string, rj: RunningJob, cause: string, tasks: TaskRecord[]): Promise<void> {
    const gang = rj.gang!;
    const h = await this.store.record(id);
    if (h?.state !== 'running' || Number(h.gang) !== gang.attempt) return;
    const restarts = Number(h.restarts ?? 0);
    const max = (rj.spec as TrainJobSpec).maxRestarts ?? MAX_RESTARTS_DEFAULT;
    if (restarts >= max) {
      await this.fail(id, {
        code: 'ERR_RANK_LOST',
        message: `${cause}; the group restarted ${restarts} times already (maxRestarts ${max})`,
      });
      return;
    }
    const reason = `restarting the group from its last checkpoint (restart ${restarts + 1} of at most ${max}): ${cause}`;
    const old = await this.store.restartGroup(id, gang.attempt, rj.inputs.length, reason);
    if (!old) return;
    this.log.warn(`scheduler: job ${id}: ${reason}`);
    await this.store.log(id, reason);
    for (let i = 0; i < old.length; i++) {
      if (!old[i]) continue;
      const bullId = taskJobId(id, i, gang.attempt);
      if (!(await this.unqueue(old[i], bullId))) await this.store.markStale(old[i], bullId);
    }
    // Read after the failures were committed: a beat that differs from this one was sent after them.
    const live = new Map((await this.store.liveNodes()).map((b) => [b.name, b.at]));
    const suspects: Suspects = { since: Date.now(), at: new Map() };
    const excluded: Excluded = new Map();
    for (const t of tasks) {
      if (!t.node) continue;
      const at = live.get(t.node);
      if (t.state === 'failed' && t.error?.code === 'ERR_SHUTTING_DOWN') excluded.set(t.node, at);
      else if (t.state !== 'failed' && t.state !== 'cancelled' && !excluded.has(t.node)) {
        if (at === undefined) excluded.set(t.node, undefined);
        else suspects.at.set(t.node, at);
      }
    }
    for (const n of excluded.keys()) suspects.at.delete(n);
    rj.gang = { attempt: gang.attempt + 1, suspects, excluded };
    rj.waiting = new Set(rj.inputs.keys());
    rj.waited.clear();
    rj.places = undefined;
  }

  private async finish(id: string, rj: RunningJob): Promise<void> {
    const tasks = await this.store.tasks(id, rj.inputs.length);
    let result: JobResult;
    if (rj.spec.kind === 'train') {
      const ranks: RankResult[] = tasks.flatMap((t) => t.result?.ranks ?? []).sort((a, b) => a.rank - b.rank);
      result = { ...(tasks[0]?.result ?? {}), ranks };
    } else {
      const output = rj.spec.output ?? `${id}/output`;
      const members = tasks.sort((a, b) => a.index - b.index).map((t) => t.outputId ?? '');
      try {
        await this.cluster.client.createDataset(output, members, { replicas: rj.spec.replicas });
      } catch (e) {
        // A scheduler that died after creating it and before recording success finds it made already.
        const mine =
          isTrellisError(e, 'ERR_OBJECT_EXISTS') &&
          (await this.cluster.shards(output).then(
            (s) => s.map((x) => x.id).join() === members.join(),
            () => false,
          ));
        if (!mine) {
          const err = asTrellisError(e, 'ERR_INTERNAL', `creating the output dataset ${output}`);
          await this.fail(id, err.toPayload());
          return;
        }
      }
      result = { output };
    }
    await this.store.transition(
      id,
      'succeeded',
      ['running'],
      { endedAt: new Date().toISOString(), result: JSON.stringify(result) },
      ['reason'],
      { result },
    );
    this.jobs.delete(id);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      clearTimeout(this.timer);
      await this.ticking;
      if (this.leader) {
        await this.store.redis
          .eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            1,
            this.store.key('scheduler'),
            this.token,
          )
          .catch(() => {});
      }
      await Promise.all([...this.queues.values()].map((q) => q.close().catch(() => {})));
    })();
    return this.closing;
  }
}
