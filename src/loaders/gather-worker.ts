/**
 * A loader's gather worker: a child process (forked by GatherPool) that maps
 * the dataset's local shards, and for each task allocates a blob in the
 * arena, copies the batch's rows into it and seals it, handing the id back.
 * It computes each epoch's order itself from the seed, so a task is a few
 * numbers.
 *
 * Who frees a batch. The loader pins and deletes each batch it receives
 * (adopts it) and says so in a later task (`acks`). A sealed batch not yet
 * acknowledged is this worker's to clean up: when the worker exits — told to
 * stop, or because its loader went away — it deletes those (deleting one the
 * loader did adopt is a harmless ERR_OBJECT_NOT_FOUND), and closing its
 * connection makes the store abort a blob it had not sealed.
 */
import type { BlobWriter, TrellisClient } from '../client/client.js';
import { connect } from '../client/connect.js';
import { asTrellisError, TrellisError } from '../errors.js';
import { native } from '../native.js';
import type { FromGatherWorker, InitMessage, TaskMessage, ToGatherWorker } from './gather-messages.js';
import { type GroupLayout, LocalRows } from './local-rows.js';
import { OrderCache } from './sampler.js';
import { shardParts } from './shard.js';

/** Blobs at least this big are pre-faulted for writing when the store does not keep freed pages warm. */
const POPULATE_MIN_BYTES = 64 * 1024;

function send(m: FromGatherWorker): void {
  // After the loader went away there is nobody to tell (and send would raise an 'error' event).
  if (process.connected) process.send?.(m, (err: unknown) => void err);
}

interface Job {
  task: TaskMessage;
  layout: GroupLayout;
  /** Asked for when the task arrives, so the round trip overlaps the gathers before it. */
  blob: Promise<BlobWriter>;
}

class Worker {
  private readonly queue: Job[] = [];
  private running: Promise<void> | null = null;
  /** Seals sent and not yet answered. */
  private readonly sealing = new Set<Promise<void>>();
  /** Batches sealed and not yet acknowledged by the loader. */
  private readonly unacked = new Set<string>();
  private stopped = false;

  constructor(
    private readonly client: TrellisClient,
    private readonly rows: LocalRows,
    private readonly orders: OrderCache,
    private readonly warmArena: boolean,
    private readonly batchSize: number,
  ) {}

  push(task: TaskMessage): void {
    for (const id of task.acks) this.unacked.delete(id);
    const layout = this.rows.groupLayout(this.batchSize, task.index, task.count);
    const blob = this.client.createBlob(layout.size);
    blob.catch(() => {}); // a failure surfaces when the job runs (or not at all after stop)
    this.queue.push({ task, layout, blob });
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      for (let job = this.queue.shift(); job && !this.stopped; job = this.queue.shift()) await this.run(job);
    } catch (e) {
      fail(e);
    } finally {
      this.running = null;
    }
  }

  /** Gathers one batch into its blob and sends the seal; the next gather does not wait for the answer. */
  private async run({ task, layout, blob }: Job): Promise<void> {
    const w = await blob;
    send({ t: 'alloc', id: w.id });
    if (!this.warmArena && w.buffer.byteLength >= POPULATE_MIN_BYTES) {
      // One madvise instead of a page fault per 4 KiB page of a block the store just gave back to the kernel.
      native.populate(w.buffer.buffer as ArrayBuffer, w.buffer.byteOffset, w.buffer.byteLength, true);
    }
    const order = this.orders.get(task.epoch);
    layout.ranges.forEach(([start, end], j) => {
      this.rows.gather(w.buffer.subarray(layout.offsets[j]), order, start, end);
    });
    const sealed = w.seal().then(
      () => {
        this.unacked.add(w.id);
        send({ t: 'batch', id: w.id, epoch: task.epoch, index: task.index, count: task.count });
      },
      (e) => fail(e),
    );
    this.sealing.add(sealed);
    void sealed.finally(() => this.sealing.delete(sealed));
  }

  /** Finishes the gather in hand and the seals sent, then deletes every batch the loader has not acknowledged. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    await this.running;
    await Promise.all([...this.sealing]);
    await Promise.all([...this.unacked].map((id) => this.client.delete(id).catch(() => {})));
  }
}

let client: TrellisClient | null = null;
let worker: Worker | null = null;
let exiting = false;

async function exit(code: number): Promise<void> {
  if (exiting) return;
  exiting = true;
  await worker?.stop().catch(() => {});
  // Closing the connection makes the store abort any blob still unsealed.
  await client?.close().catch(() => {});
  process.exit(code);
}

function fail(e: unknown): void {
  if (exiting) return; // what fails while closing down (ERR_CLOSED) is no news
  send({ t: 'error', ...asTrellisError(e, 'ERR_WORKER_FAILED', `loader worker ${process.pid}`).toPayload() });
  void exit(1);
}

async function init(m: InitMessage): Promise<void> {
  client = await connect({ socket: m.socket, name: `loader worker ${process.pid}` });
  const values = await client.getMany(m.shards);
  const parts = values.flatMap((v, i) =>
    shardParts(v, m.shards[i], { featureColumn: m.featureColumn, labelColumn: m.labelColumn }),
  );
  const rows = new LocalRows(parts);
  if (rows.rows !== m.rows) {
    throw new TrellisError('ERR_INTERNAL', `loader worker sees ${rows.rows} rows, the loader ${m.rows}`);
  }
  if (m.populate) {
    // This process's mapping of the shards faults page by page on first touch otherwise (random rows, many times).
    for (const b of rows.byteRanges()) native.populate(b.buffer as ArrayBuffer, b.byteOffset, b.byteLength, false);
  }
  const status = await client.status();
  worker = new Worker(client, rows, new OrderCache(rows.rows, m.shuffle, m.seed), status.reserved, m.batchSize);
  send({ t: 'ready', rows: rows.rows });
}

process.on('message', (m: ToGatherWorker) => {
  if (exiting) return;
  switch (m.t) {
    case 'init':
      init(m).catch(fail);
      break;
    case 'task':
      if (!worker) fail(new TrellisError('ERR_INTERNAL', 'task before init'));
      else worker.push(m);
      break;
    case 'stop':
      void exit(0);
      break;
  }
});
// The loader is gone (closed its end, or died): nobody will take our batches.
process.on('disconnect', () => void exit(0));
