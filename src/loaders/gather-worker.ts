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
import type { TrellisClient } from '../client/client.js';
import { connect } from '../client/connect.js';
import { isTrellisError, TrellisError } from '../errors.js';
import { native } from '../native.js';
import { LocalRows } from './local-rows.js';
import { OrderCache } from './sampler.js';
import { shardParts } from './shard.js';
import type { FromWorker, InitMessage, TaskMessage, ToWorker } from './worker-messages.js';

/** Blobs at least this big are pre-faulted for writing when the store does not keep freed pages warm. */
const POPULATE_MIN_BYTES = 64 * 1024;

function send(m: FromWorker): void {
  // After the loader went away there is nobody to tell (and send would raise an 'error' event).
  if (process.connected) process.send?.(m, (err: unknown) => void err);
}

class Worker {
  private readonly queue: TaskMessage[] = [];
  private running: Promise<void> | null = null;
  /** Batches sealed and not yet acknowledged by the loader. */
  private readonly unacked = new Set<string>();
  private stopped = false;

  constructor(
    private readonly client: TrellisClient,
    private readonly rows: LocalRows,
    private readonly orders: OrderCache,
    private readonly warmArena: boolean,
  ) {}

  push(task: TaskMessage): void {
    for (const id of task.acks) this.unacked.delete(id);
    this.queue.push(task);
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      for (let task = this.queue.shift(); task && !this.stopped; task = this.queue.shift()) await this.run(task);
    } catch (e) {
      fail(e);
    } finally {
      this.running = null;
    }
  }

  private async run(task: TaskMessage): Promise<void> {
    const L = this.rows.layout(task.end - task.start);
    const w = await this.client.createBlob(L.size);
    send({ t: 'alloc', id: w.id, epoch: task.epoch, index: task.index });
    if (!this.warmArena && L.size >= POPULATE_MIN_BYTES) {
      // One madvise instead of a page fault per 4 KiB page of a block the store just gave back to the kernel.
      native.populate(w.buffer.buffer as ArrayBuffer, w.buffer.byteOffset, w.buffer.byteLength, true);
    }
    this.rows.gather(w.buffer, this.orders.get(task.epoch), task.start, task.end);
    await w.seal();
    this.unacked.add(w.id);
    send({ t: 'batch', id: w.id, epoch: task.epoch, index: task.index });
  }

  /** Finishes the task in hand, then deletes every batch the loader has not acknowledged. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    await this.running;
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
  const payload = isTrellisError(e)
    ? e.toPayload()
    : { code: 'ERR_WORKER_FAILED', message: `loader worker ${process.pid}: ${(e as Error)?.stack ?? String(e)}` };
  send({ t: 'error', ...payload });
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
  worker = new Worker(client, rows, new OrderCache(rows.rows, m.shuffle, m.seed), status.reserved);
  send({ t: 'ready', rows: rows.rows });
}

process.on('message', (m: ToWorker) => {
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
