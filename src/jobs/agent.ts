/**
 * The node agent (`trellis agent`), one per node next to its store: a BullMQ
 * Worker on its node's queue. For each task it claims a new attempt (a lease
 * in the task record), moves inputs that live elsewhere into its store,
 * runs the job kind's runner and commits the result once, fenced by the
 * lease: a stalled duplicate whose lease was taken over commits nothing and
 * drops its output. Tasks are at-least-once (a kill -9'd agent's task runs
 * again once BullMQ sees its lock expire); results are exactly-once.
 *
 * Also: a heartbeat key with a TTL (node, store instance, handler names, so
 * submit can refuse an unknown handler), a 200 ms poll of the running jobs'
 * states (cancel and timeout abort running tasks within it), a new Worker
 * whenever Redis comes back (bullmq #648, #2964, #3185: a worker may stop
 * consuming after a reconnect), and a bounded drain on close.
 */
import { randomBytes } from 'node:crypto';
import { type Job as BullJob, DelayedError, UnrecoverableError, Worker } from 'bullmq';
import { connect } from '../client/connect.js';
import { copyOn } from '../client/shard-copies.js';
import type { StoreClient } from '../client/store-client.js';
import { ERROR_CODES, type ErrorPayload, invalidParameter, isTrellisError, TrellisError } from '../errors.js';
import { type Logger, silentLogger } from '../observe/logger.js';
import { AgentMetrics, type TaskOutcome } from './agent-metrics.js';
import { DEFAULT_BEAT_MS } from './beat-watch.js';
import { isFinal, JobStore } from './job-store.js';
import type { JobProgress } from './job-types.js';
import { closeSpareHosts, keepSpareHosts, listHandlers, runners } from './kinds/index.js';
import { bullConnection, checkNodeName, queueName } from './node-queue.js';
import { checkNoEviction } from './redis-policy.js';
import type { TaskContext, TaskPayload } from './task-types.js';

export interface AgentOptions {
  socket: string;
  redis: string;
  /** The deployment's key prefix in Redis (default trellis:default). */
  prefix?: string;
  /** Default: the store's name, else `instance-<id>`. */
  node?: string;
  handlers?: string[];
  /** Tasks run at once (default 2). */
  concurrency?: number;
  /** BullMQ lock: a task whose agent stops renewing it runs again after this long (default 30000). */
  lockMs?: number;
  /** Heartbeat period; the key lives 5 periods (default 1000). */
  beatMs?: number;
  /** close(): how long running tasks may finish before they are stopped and handed back (default 10000). */
  drainMs?: number;
  /** Where the agent logs (default: nowhere); each task's lines carry its jobId and task index. */
  logger?: Logger;
}

/** Codes that no retry can fix: the task fails at once. */
const PERMANENT: readonly string[] = ['ERR_HANDLER_NOT_FOUND', 'ERR_BAD_REQUEST', 'ERR_UNSUPPORTED'];
const POLL_MS = 200;
const PROGRESS_MS = 500;

interface Running {
  jobId: string;
  ac: AbortController;
  /** Train ranks: the group attempt; a newer one on the job means the group restarted without it. */
  gang?: number;
}

/** A thrown value as the {code, message} a task records: our codes kept, anything else ERR_WORKER_FAILED. */
export function taskError(e: unknown): ErrorPayload {
  const code = (e as { code?: unknown })?.code;
  const message = e instanceof Error ? e.message : String(e);
  if (typeof code === 'string' && code in ERROR_CODES) return { code, message };
  return { code: 'ERR_WORKER_FAILED', message: `the task failed with an error without a code: ${message}` };
}

export class Agent {
  private worker: Worker<TaskPayload> | undefined;
  private readonly running = new Map<string, Running>();
  private readonly agentId = randomBytes(6).toString('hex');
  private beatTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private redisDown = false;
  private closed = false;
  private closing?: Promise<void>;
  private readonly log: Logger;
  /** Workers made so far (1 + reconnect replacements), for status and tests. */
  workersStarted = 0;
  /** This agent's Prometheus metrics (`trellis agent --metrics-port` serves them). */
  readonly metrics: AgentMetrics;

  private constructor(
    private readonly opts: AgentOptions,
    private readonly store: JobStore,
    private readonly client: StoreClient,
    readonly node: string,
    private readonly handlers: string[],
  ) {
    this.log = (opts.logger ?? silentLogger).child({ node });
    this.metrics = new AgentMetrics(
      () => this.running.size,
      () => !this.redisDown,
    );
  }

  private get beatMs(): number {
    return this.opts.beatMs ?? DEFAULT_BEAT_MS;
  }

  /** Healthy while it has a running worker and Redis (what /healthz answers). */
  health(): { ok: boolean; reason?: string } {
    if (this.closed) return { ok: false, reason: 'shutting down' };
    if (this.redisDown) return { ok: false, reason: 'Redis is unreachable' };
    if (!this.worker?.isRunning()) return { ok: false, reason: 'no worker is consuming the queue' };
    return { ok: true };
  }

  static async start(opts: AgentOptions): Promise<Agent> {
    if (opts.beatMs !== undefined && !(Number.isSafeInteger(opts.beatMs) && opts.beatMs >= 50)) {
      throw invalidParameter('beatMs', 'an integer of at least 50 (ms)', opts.beatMs);
    }
    const client = await connect({ socket: opts.socket, name: 'trellis agent' });
    let store: JobStore | undefined;
    try {
      const st = await client.status();
      const node = opts.node ?? (st.name || `instance-${st.instanceId}`);
      checkNodeName(node);
      store = await JobStore.open(opts.redis, opts.prefix ?? 'trellis:default', `trellis agent ${node}`);
      await checkNoEviction(store.redis, 'trellis agent');
      const agent = new Agent(opts, store, client, node, opts.handlers ?? []);
      await agent.begin();
      return agent;
    } catch (e) {
      await store?.close();
      await client.close();
      throw e;
    }
  }

  private async begin(): Promise<void> {
    // Task hosts forked and connected ahead of their tasks: a cold host costs ~0.3 s.
    keepSpareHosts(this.opts.socket, this.opts.concurrency ?? 2);
    await this.beat();
    this.beatTimer = setInterval(() => void this.beat(), this.beatMs);
    this.pollTimer = setInterval(() => void this.pollStops(), POLL_MS);
    const r = this.store.redis;
    r.on('close', () => {
      if (!this.redisDown && !this.closed) this.log.warn('Redis connection lost');
      this.redisDown = true;
    });
    r.on('ready', () => {
      if (!this.redisDown || this.closed) return;
      this.redisDown = false;
      this.log.warn('Redis is back; starting a new worker');
      this.replaceWorker();
    });
    this.worker = this.makeWorker();
  }

  private makeWorker(): Worker<TaskPayload> {
    const lockMs = this.opts.lockMs ?? 30_000;
    const w = new Worker<TaskPayload>(queueName(this.node), (job, token) => this.process(job, token), {
      connection: bullConnection(this.opts.redis),
      prefix: this.store.bullPrefix,
      concurrency: this.opts.concurrency ?? 2,
      lockDuration: lockMs,
      stalledInterval: Math.max(500, Math.floor(lockMs / 2)),
      maxStalledCount: 3,
    });
    w.on('error', (e) => this.log.warn({ code: (e as { code?: unknown }).code }, `worker: ${e.message}`));
    w.on('stalled', (id) =>
      this.log.warn({ bullJob: id }, 'a task stalled (its agent stopped renewing the lock); it runs again'),
    );
    w.on('failed', (job, err) => {
      // BullMQ fails a job that stalled too often without calling us: record it, or the job would wait forever.
      if (job && /stalled/i.test(err.message)) void this.settleLost(job.data, err.message);
    });
    this.workersStarted++;
    this.metrics.workerStarted();
    return w;
  }

  private replaceWorker(): void {
    const old = this.worker;
    this.worker = this.makeWorker();
    // The old worker's running tasks finish and commit through the store's own connection.
    void old?.close().catch(() => {});
  }

  private async beat(): Promise<void> {
    try {
      if (this.worker && !this.worker.isRunning() && !this.closed) this.replaceWorker();
      await this.store.beat(
        {
          name: this.node,
          instanceId: this.client.instanceId,
          storeId: this.client.storeId,
          concurrency: this.opts.concurrency ?? 2,
          handlers: await listHandlers(this.handlers),
          pid: process.pid,
          at: Date.now(),
          beatMs: this.beatMs,
        },
        this.beatMs * 5,
      );
    } catch {
      // Redis is down; the next beat tries again.
    }
  }

  /**
   * Aborts running tasks whose job reached a final state (cancelled, failed,
   * timed out), and ranks of a group that was restarted without them.
   */
  private async pollStops(): Promise<void> {
    if (this.running.size === 0) return;
    const ids = [...new Set([...this.running.values()].map((r) => r.jobId))];
    try {
      const states = await this.store.states(ids);
      ids.forEach((id, i) => {
        const { state, gang } = states[i];
        for (const r of this.running.values()) {
          if (r.jobId !== id || r.ac.signal.aborted) continue;
          if (state && isFinal(state)) r.ac.abort(state);
          else if (r.gang !== undefined && gang > r.gang) r.ac.abort('restarted');
        }
      });
    } catch {
      // Redis is down; try again next poll.
    }
  }

  private async process(job: BullJob<TaskPayload>, token: string | undefined): Promise<unknown> {
    const p = job.data;
    const lease = `${this.agentId}.${job.attemptsStarted}.${randomBytes(4).toString('hex')}`;
    const gang = p.gang?.attempt;
    const claimed = await this.store.task(p.jobId, p.index, 'claim', lease, {
      state: 'running',
      node: this.node,
      gang,
    });
    // done already (a duplicate), the job is gone, or a rank of a group restarted since
    if (claimed === 0 || claimed === -1 || claimed === -3) return null;
    if (claimed === -2) {
      await this.settleLost(p, 'its job ended before it ran');
      return null;
    }
    // The BullMQ id: two ranks of one index (an old group's, stopping, and the new one's) may run here at once.
    const key = job.id ?? `${p.jobId}.${p.index}`;
    const ac = new AbortController();
    this.running.set(key, { jobId: p.jobId, ac, ...(gang !== undefined ? { gang } : {}) });
    const log = this.log.child({ jobId: p.jobId, task: p.index, attempt: claimed });
    const t0 = performance.now();
    let outcome: TaskOutcome = 'failed';
    log.info({ kind: p.spec.kind }, 'task started');
    let latest: JobProgress | undefined;
    let sent = 0;
    let flush: NodeJS.Timeout | undefined;
    const sendProgress = () => {
      flush = undefined;
      sent = Date.now();
      if (latest) void this.store.progress(p.jobId, latest).catch(() => {});
    };
    try {
      const { localShards, bytesLocal, bytesMoved } = await this.inputs(p.shards, ac.signal);
      this.metrics.inputs(bytesLocal, bytesMoved);
      const ctx: TaskContext = {
        client: this.client,
        node: this.node,
        socket: this.opts.socket,
        localShards,
        signal: ac.signal,
        handlerDirs: this.handlers,
        progress: (v) => {
          latest = v;
          if (!flush) flush = setTimeout(sendProgress, Math.max(0, PROGRESS_MS - (Date.now() - sent)));
        },
        log: (line) => void this.store.log(p.jobId, `${this.node} task ${p.index}: ${line}`).catch(() => {}),
      };
      const out = await runners[p.spec.kind](p, ctx);
      if (ac.signal.aborted) {
        // Stopped while finishing: the output is nobody's (unless another attempt committed the same one).
        await this.dropOutput(p, out.outputId);
        throw ac.signal.reason;
      }
      const ok = await this.store.task(p.jobId, p.index, 'commit', lease, {
        state: 'succeeded',
        bytesLocal,
        bytesMoved,
        outputId: out.outputId,
        result: out.result ? JSON.stringify(out.result) : undefined,
        error: '',
        gang,
      });
      outcome = ok === 1 ? 'succeeded' : 'discarded';
      if (ok !== 1) {
        // Another attempt holds the lease or committed first: this output is a duplicate.
        await this.dropOutput(p, out.outputId);
        await this.discarded(p, claimed);
      }
      return null;
    } catch (e) {
      return await this.failed(job, token, p, lease, claimed, ac.signal, e, (o) => {
        outcome = o;
      });
    } finally {
      if (flush) {
        clearTimeout(flush);
        sendProgress();
      }
      this.running.delete(key);
      const seconds = (performance.now() - t0) / 1000;
      this.metrics.taskEnded(p.spec.kind, outcome, seconds);
      log.info({ outcome, ms: Math.round(seconds * 1000) }, 'task ended');
    }
  }

  /**
   * Deletes an attempt's output nobody will use. The map and infer kinds name
   * a task's output (`<job>/output/<index>`) and a retry on the same node
   * returns the earlier attempt's object, so the output of a duplicate may be
   * the very object the committed attempt recorded: that one stays.
   */
  private async dropOutput(p: TaskPayload, outputId: string | undefined): Promise<void> {
    if (!outputId) return;
    const committed = await this.store.committedOutput(p.jobId, p.index).catch(() => outputId); // Redis down: keep it rather than risk the result
    if (committed !== outputId) await this.client.delete(outputId).catch(() => {});
  }

  private async failed(
    job: BullJob<TaskPayload>,
    token: string | undefined,
    p: TaskPayload,
    lease: string,
    attempt: number,
    signal: AbortSignal,
    e: unknown,
    ended: (o: TaskOutcome) => void,
  ): Promise<never> {
    const log = this.log.child({ jobId: p.jobId, task: p.index, attempt });
    const gang = p.gang?.attempt;
    if (signal.aborted && signal.reason === 'restarted') {
      // Its group restarted without it: the task record is the new group's; nothing to commit.
      ended('cancelled');
      throw new UnrecoverableError(`job ${p.jobId}: group attempt ${gang} was restarted`);
    }
    if (signal.aborted && signal.reason === 'shutdown' && gang !== undefined) {
      // A rank cannot be handed back alone (its peers wait on it): it is lost, and its group restarts.
      const err = {
        code: 'ERR_SHUTTING_DOWN',
        message: `the agent on ${this.node} shut down while rank ${p.index} ran`,
      };
      ended('failed');
      await this.store.task(p.jobId, p.index, 'commit', lease, { state: 'failed', error: JSON.stringify(err), gang });
      throw new UnrecoverableError(err.message);
    }
    if (signal.aborted && signal.reason === 'shutdown') {
      ended('handed_back');
      // Handed back without spending an attempt: another agent (or this one restarted) runs it.
      await this.store.task(p.jobId, p.index, 'retry', lease, { state: 'placed' }).catch(() => {});
      await job.moveToDelayed(Date.now(), token);
      throw new DelayedError();
    }
    if (signal.aborted) {
      // The job ended: cancelled, failed (another task, a timeout), or succeeded (another
      // attempt of this task committed while this one was stalled).
      const h = await this.store.record(p.jobId);
      const state = signal.reason === 'failed' ? 'failed' : 'cancelled';
      const error =
        state === 'failed' ? (h?.error ?? JSON.stringify({ code: 'ERR_INTERNAL', message: 'job ended' })) : '';
      ended('cancelled');
      const ok = await this.store.task(p.jobId, p.index, 'commit', lease, { state, error, gang });
      if (ok !== 1) await this.discarded(p, attempt);
      throw new UnrecoverableError(`job ${p.jobId} is ${signal.reason}`);
    }
    const err = taskError(e);
    const attempts = job.opts.attempts ?? 1;
    const last = job.attemptsMade + 1 >= attempts || PERMANENT.includes(err.code);
    // A task's failure is its handler's or its data's: a code and a message, not a stack (ERR_WORKER_FAILED keeps it).
    if (err.code === 'ERR_WORKER_FAILED') log.error({ err: e, code: err.code, last }, 'task attempt failed');
    else log.warn({ code: err.code, last }, `task attempt failed: ${err.message}`);
    ended(last || gang !== undefined ? 'failed' : 'retried');
    if (last || gang !== undefined) {
      await this.store.task(p.jobId, p.index, 'commit', lease, { state: 'failed', error: JSON.stringify(err), gang });
      void this.store.log(p.jobId, `${this.node} task ${p.index}: failed: ${err.code}: ${err.message}`).catch(() => {});
      throw new UnrecoverableError(err.message);
    }
    await this.store.task(p.jobId, p.index, 'retry', lease, { state: 'placed', error: JSON.stringify(err) });
    void this.store
      .log(
        p.jobId,
        `${this.node} task ${p.index}: attempt ${job.attemptsMade + 1} of ${attempts} failed: ${err.code}: ${err.message}; retrying`,
      )
      .catch(() => {});
    throw isTrellisError(e) ? e : new TrellisError(err.code as keyof typeof ERROR_CODES, err.message);
  }

  private async discarded(p: TaskPayload, attempt: number): Promise<void> {
    await this.store
      .log(p.jobId, `${this.node} task ${p.index}: attempt ${attempt} discarded: another attempt holds the task`)
      .catch(() => {});
  }

  /**
   * A task no attempt will finish, made final without a lease: one whose job
   * ended before it ran is cancelled; one BullMQ gave up on (stalled too
   * often) fails with ERR_WORKER_FAILED, which fails its job.
   */
  private async settleLost(p: TaskPayload, why: string): Promise<void> {
    const h = await this.store.schedulingState(p.jobId).catch(() => undefined);
    const fields =
      h && isFinal(h.state)
        ? { state: 'cancelled' as const }
        : {
            state: 'failed' as const,
            error: JSON.stringify({ code: 'ERR_WORKER_FAILED', message: `task ${p.index}: ${why}` }),
          };
    await this.store.task(p.jobId, p.index, 'settle', '', { ...fields, gang: p.gang?.attempt }).catch(() => {});
  }

  /** The task's shards as local ids: migrated here when they live elsewhere, with the bytes counted. */
  private async inputs(
    shards: string[],
    signal: AbortSignal,
  ): Promise<{ localShards: string[]; bytesLocal: number; bytesMoved: number }> {
    let bytesLocal = 0;
    let bytesMoved = 0;
    const localShards: string[] = [];
    for (const id of shards) {
      signal.throwIfAborted();
      const loc = await this.client.locate(id);
      const s = loc.shards[0];
      // Any live copy here is local input: a replica counts as much as the primary.
      const here = s && copyOn(s, this.client.instanceId);
      if (here) {
        bytesLocal += s.nbytes;
        localShards.push(here.id);
      } else {
        localShards.push(await this.client.migrate(id));
        bytesMoved += s?.nbytes ?? loc.nbytes;
      }
    }
    return { localShards, bytesLocal, bytesMoved };
  }

  /** Stops taking tasks; running ones get drainMs to finish, then are stopped and handed back. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      clearInterval(this.beatTimer);
      const w = this.worker;
      const closed = w?.close() ?? Promise.resolve();
      const drained = await Promise.race([
        closed.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), this.opts.drainMs ?? 10_000).unref()),
      ]);
      if (!drained) {
        for (const r of this.running.values()) r.ac.abort('shutdown');
        await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
      }
      clearInterval(this.pollTimer);
      await this.store.dropBeat(this.node).catch(() => {});
      await closeSpareHosts();
      await this.store.close();
      await this.client.close();
    })();
    return this.closing;
  }
}
