/**
 * A JobService kept in memory, for testing the HTTP API and its clients above
 * the interface (the engine has its own tests against real Redis). It keeps
 * the contract of src/jobs/job-types.ts: submit is idempotent by id, list
 * filters, events() replays after an id then follows live ones and ends after
 * a final state, cancel ends a job. Tests move jobs along with emit() and
 * read what the API handed it (submitted, filters, signals).
 */
import { TrellisError } from '../../dist/src/errors.js';
import {
  type DatasetInfo,
  FINAL_STATES,
  type Job,
  type JobEvent,
  type JobEventData,
  type JobEventType,
  type JobFilter,
  type JobResult,
  type JobService,
  type JobSpec,
  type NodeInfo,
} from '../../dist/src/jobs/job-types.js';

export const CREATED_AT = '2026-12-01T08:00:00.000Z';

export const NODES: NodeInfo[] = [
  { name: 'node-a', instanceId: 1, memoryUsed: 1024, memoryLimit: 1 << 30, queue: { waiting: 2, active: 1 } },
  { name: 'node-b', instanceId: 2, memoryUsed: 0, memoryLimit: 1 << 30, queue: { waiting: 0, active: 0 } },
];

export const DATASETS: DatasetInfo[] = [
  {
    name: 'fmnist/train',
    shards: [
      { id: 'o0001000000000001', node: 'node-a', nbytes: 3000 },
      { id: 'o0002000000000001', node: 'node-b', nbytes: 1000 },
    ],
    bytesByNode: { 'node-a': 3000, 'node-b': 1000 },
  },
];

interface Entry {
  job: Job;
  events: JobEvent[];
  wake: (() => void)[];
}

export class MemoryJobService implements JobService {
  /** Every spec submit() was called with, in order (also for repeats of an id). */
  readonly submitted: JobSpec[] = [];
  readonly filters: JobFilter[] = [];
  /** The signal of every events() call, in order. */
  readonly signals: AbortSignal[] = [];
  /** The afterId of every events() call, in order. */
  readonly afterIds: (string | undefined)[] = [];
  closed = false;
  private readonly jobs = new Map<string, Entry>();
  private seq = 0;
  private nextJob = 0;

  async submit(spec: JobSpec): Promise<{ job: Job; created: boolean }> {
    this.submitted.push(spec);
    const old = spec.id === undefined ? undefined : this.jobs.get(spec.id);
    if (old) return { job: structuredClone(old.job), created: false };
    const id = spec.id ?? `job-${++this.nextJob}`;
    const job: Job = { id, kind: spec.kind, state: 'queued', createdAt: CREATED_AT, spec, tasks: [] };
    this.jobs.set(id, { job, events: [], wake: [] });
    this.emit(id, 'state', { state: 'queued' });
    return { job: structuredClone(job), created: true };
  }

  async get(id: string): Promise<Job> {
    return structuredClone(this.entry(id).job);
  }

  async list(filter: JobFilter): Promise<Job[]> {
    this.filters.push(filter);
    const all = [...this.jobs.values()]
      .map((e) => e.job)
      .filter(
        (j) =>
          (filter.state === undefined || j.state === filter.state) &&
          (filter.kind === undefined || j.kind === filter.kind),
      );
    return structuredClone(all.slice(0, filter.limit ?? all.length));
  }

  async cancel(id: string): Promise<Job> {
    const e = this.entry(id);
    if (!FINAL_STATES.includes(e.job.state))
      this.emit(id, 'state', { state: 'cancelled', reason: 'cancelled by request' });
    return structuredClone(e.job);
  }

  async *events(id: string, afterId: string | undefined, signal: AbortSignal): AsyncIterable<JobEvent> {
    const e = this.entry(id);
    this.signals.push(signal);
    this.afterIds.push(afterId);
    let next = 0;
    if (afterId !== undefined) {
      next = e.events.findIndex((ev) => ev.id === afterId) + 1;
      if (next === 0) throw new TrellisError('ERR_BAD_REQUEST', `job ${id} has no event ${afterId}`);
    }
    for (;;) {
      while (next < e.events.length) {
        const ev = e.events[next++]!;
        yield ev;
        if (ev.type === 'state' && FINAL_STATES.includes(ev.data.state)) return;
      }
      if (signal.aborted) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener('abort', done);
          resolve();
        };
        e.wake.push(done);
        signal.addEventListener('abort', done);
      });
      if (signal.aborted) return;
    }
  }

  async logs(id: string): Promise<string> {
    return this.entry(id)
      .events.flatMap((ev) => (ev.type === 'log' ? [`${ev.data.line}\n`] : []))
      .join('');
  }

  async nodes(): Promise<NodeInfo[]> {
    return structuredClone(NODES);
  }

  async datasets(limit = 100): Promise<DatasetInfo[]> {
    return structuredClone(DATASETS.slice(0, limit));
  }

  async dataset(name: string): Promise<DatasetInfo> {
    const d = DATASETS.find((x) => x.name === name);
    if (!d) throw new TrellisError('ERR_NAME_NOT_FOUND', `no dataset is named ${JSON.stringify(name)}`);
    return structuredClone(d);
  }

  /** What ready() throws, when set (the readiness route's failure path). */
  notReady: TrellisError | undefined;

  async ready(): Promise<void> {
    if (this.notReady) throw this.notReady;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Appends an event to a job's log (and applies it to the job record), waking its followers. */
  emit<T extends JobEventType>(id: string, type: T, data: JobEventData[T]): JobEvent {
    const e = this.entry(id);
    const ev = { id: String(++this.seq), type, data } as JobEvent;
    if (ev.type === 'state') {
      e.job.state = ev.data.state;
      if (ev.data.reason !== undefined) e.job.reason = ev.data.reason;
      if (ev.data.error !== undefined) e.job.error = ev.data.error;
      if (ev.data.state === 'running') e.job.startedAt = CREATED_AT;
      if (FINAL_STATES.includes(ev.data.state)) e.job.endedAt = CREATED_AT;
    } else if (ev.type === 'progress') e.job.progress = ev.data;
    else if (ev.type === 'task') e.job.tasks[ev.data.index] = ev.data;
    e.events.push(ev);
    for (const w of e.wake.splice(0)) w();
    return ev;
  }

  /** Sets what the job produced (the engine does this as tasks finish). */
  setResult(id: string, result: JobResult): void {
    this.entry(id).job.result = result;
  }

  /** The job's whole event log so far. */
  eventsOf(id: string): JobEvent[] {
    return structuredClone(this.entry(id).events);
  }

  private entry(id: string): Entry {
    const e = this.jobs.get(id);
    if (!e) throw new TrellisError('ERR_JOB_NOT_FOUND', `no job ${JSON.stringify(id)}`);
    return e;
  }
}
