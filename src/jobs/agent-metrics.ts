/**
 * An agent's Prometheus metrics (docs/OPERATIONS.md, "Metrics"): its tasks
 * by outcome and how long they took, the bytes its tasks read where they
 * were versus the bytes moved here first, and what it runs now. One
 * registry per agent (tests run several in a process).
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** How an attempt of a task ended on this agent. */
export type TaskOutcome =
  /** committed its result */
  | 'succeeded'
  /** failed for good (last attempt, or an error no retry fixes) */
  | 'failed'
  /** failed, and is placed again for another attempt */
  | 'retried'
  /** stopped because its job ended (cancelled, failed elsewhere, timed out) */
  | 'cancelled'
  /** handed back unfinished when the agent shut down */
  | 'handed_back'
  /** finished, but another attempt held the task: its output was dropped */
  | 'discarded';

/** From 10 ms (a map over one small shard) to an hour (a long training run). */
export const TASK_DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly tasks = new Counter({
    name: 'trellis_agent_tasks_total',
    help: 'Task attempts this agent ran, by job kind and how they ended',
    labelNames: ['kind', 'state'],
    registers: [this.registry],
  });
  private readonly durations = new Histogram({
    name: 'trellis_agent_task_duration_seconds',
    help: 'Time from claiming a task to its end, by job kind and how it ended',
    labelNames: ['kind', 'state'],
    buckets: TASK_DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly inputBytes = new Counter({
    name: 'trellis_agent_input_bytes_total',
    help: "Bytes of tasks' input shards: read where they were (local) or migrated here first (moved)",
    labelNames: ['source'],
    registers: [this.registry],
  });
  private readonly workers = new Counter({
    name: 'trellis_agent_workers_started_total',
    help: 'BullMQ workers started (1, plus one each time Redis came back or a worker stopped)',
    registers: [this.registry],
  });

  constructor(running: () => number, redisUp: () => boolean) {
    new Gauge({
      name: 'trellis_agent_tasks_running',
      help: 'Tasks running on this agent now',
      registers: [this.registry],
      collect() {
        this.set(running());
      },
    });
    new Gauge({
      name: 'trellis_agent_redis_up',
      help: '1 while the agent is connected to Redis, else 0',
      registers: [this.registry],
      collect() {
        this.set(redisUp() ? 1 : 0);
      },
    });
    // Zero series exist from the start, so rate() and alerts see the first increase.
    this.inputBytes.inc({ source: 'local' }, 0);
    this.inputBytes.inc({ source: 'moved' }, 0);
  }

  taskEnded(kind: string, state: TaskOutcome, seconds: number): void {
    this.tasks.inc({ kind, state });
    this.durations.observe({ kind, state }, seconds);
  }

  inputs(bytesLocal: number, bytesMoved: number): void {
    this.inputBytes.inc({ source: 'local' }, bytesLocal);
    this.inputBytes.inc({ source: 'moved' }, bytesMoved);
  }

  workerStarted(): void {
    this.workers.inc();
  }
}
