/**
 * The sharded dataset loader: batches over the shards of a dataset that live
 * on this node's store, as tensor views over shared memory.
 *
 * - Sequential (shuffle off): a batch whose rows sit in one shard (one part of
 *   it, for Arrow shards: one record batch) is a view of the shard itself, a
 *   subarray of its tensors: no gather, no copy, no arena memory. A batch that
 *   spans two shards is gathered like a shuffled one (size shards as a
 *   multiple of the batch size to avoid that; writeDataset does by default).
 * - Shuffled: each epoch visits every local row once, in a permutation over
 *   all of them (across shards) drawn from (seed, epoch). A batch is gathered
 *   into one arena blob — by N worker processes (`workers`), or in this
 *   process with `workers: 0` — and handed over as views of that blob.
 *
 * At most `prefetch` batches exist at a time — gathering, ready, or held by
 * you — so workers wait when you do (backpressure). A batch is valid until it
 * is released: by you (`batch.release()`), or, with `autoRelease` (the
 * default), when you ask for the next one; releasing frees its arena memory.
 * Batches come in order (epoch, index), whichever worker made them.
 *
 * Closing (`close()`, leaving a for-await loop early, or the end of the last
 * epoch with autoRelease) stops the workers and waits until they have exited,
 * deletes what they had allocated, releases every batch and the shards.
 * A worker that dies or fails makes the next call fail with its error — code
 * ERR_WORKER_FAILED for a crash, the worker's own code (e.g.
 * ERR_OUT_OF_MEMORY) for a Trellis error — after that cleanup.
 *
 * @example
 *   await using loader = await openLoader(client, 'fmnist/train', { batchSize: 256, shuffle: true, seed: 1, workers: 2 });
 *   for await (const b of loader) train(b.x, b.y); // b.x: Tensor [256, 28, 28] over shared memory
 */
import { randomInt } from 'node:crypto';
import type { TrellisClient } from '../client/client.js';
import { connect } from '../client/connect.js';
import type { Tensor } from '../codecs/tensor.js';
import { invalidParameter, isTrellisError, TrellisError } from '../errors.js';
import { GatherPool } from './gather-pool.js';
import { LocalRows } from './local-rows.js';
import { batchesPerEpoch, batchRange, OrderCache } from './sampler.js';
import { type ShardColumns, shardParts } from './shard.js';
import type { BatchMessage } from './worker-messages.js';

export interface LoaderOptions extends ShardColumns {
  /** Rows per batch. */
  batchSize: number;
  /** Visit rows in a new permutation each epoch (default false: shard order). */
  shuffle?: boolean;
  /** Seed of the permutations (default: random, see `loader.seed`). Same seed, same batches. */
  seed?: number;
  /** Skip the last batch of an epoch when it is short (default false). */
  dropLast?: boolean;
  /** Epochs to run (default 1; Infinity runs until closed). */
  epochs?: number;
  /** Batches that may exist at once, the one you hold included (default 2 per worker + 1). */
  prefetch?: number;
  /** Gather worker processes (default 1); 0 gathers in this process. Started only when some batch needs gathering. */
  workers?: number;
  /** Release each batch when the next is asked for (default true). */
  autoRelease?: boolean;
  /** Pre-fault the shards in each worker at start, instead of a page fault per first touch (default true). */
  populate?: boolean;
}

export interface Batch {
  /** Features, [rows, ...sampleShape]. */
  readonly x: Tensor;
  /** Labels, [rows]. */
  readonly y: Tensor;
  readonly epoch: number;
  /** Index of the batch within its epoch. */
  readonly index: number;
  /** The last batch of its epoch. */
  readonly lastOfEpoch: boolean;
  /** 'view': x and y are views of a shard; 'gathered': of an arena blob (`id`) holding the batch. */
  readonly source: 'view' | 'gathered';
  readonly id?: string;
  /** Frees the batch (its arena memory, its prefetch slot). Views of it are invalid afterwards. Safe to call twice. */
  release(): Promise<void>;
}

interface Slot {
  promise: Promise<LoaderBatch>;
  resolve(b: LoaderBatch): void;
  reject(e: unknown): void;
  batch?: LoaderBatch;
}

class LoaderBatch implements Batch {
  /** The consumer is done with it. */
  released = false;
  /** Our reference in the store was dropped (the blob is freed). */
  freed = false;
  constructor(
    private readonly loader: DatasetLoader,
    readonly x: Tensor,
    readonly y: Tensor,
    readonly epoch: number,
    readonly index: number,
    readonly lastOfEpoch: boolean,
    readonly source: 'view' | 'gathered',
    readonly id?: string,
  ) {}

  release(): Promise<void> {
    return this.loader.releaseBatch(this);
  }
}

/** How long close waits for the store to notice a dead worker's connection before giving up on its blobs. */
const ORPHAN_WAIT_MS = 5_000;

/**
 * Opens a loader over the local shards of a dataset (a name or an id). With
 * a socket path it connects (and closes the connection on close); with a
 * client it uses it and leaves it open.
 */
export async function openLoader(
  store: TrellisClient | string,
  dataset: string,
  opts: LoaderOptions,
): Promise<DatasetLoader> {
  return DatasetLoader.open(store, dataset, opts);
}

export class DatasetLoader implements AsyncIterableIterator<Batch>, AsyncDisposable {
  /** Local rows per epoch. */
  readonly rows: number;
  readonly batchesPerEpoch: number;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly epochs: number;
  readonly prefetch: number;
  readonly autoRelease: boolean;
  /** The local shard ids, in dataset order. */
  readonly shards: string[];

  private readonly total: number;
  private readonly orders: OrderCache;
  private pool: GatherPool | null = null;
  private readonly slots = new Map<number, Slot>();
  private nextIssue = 0;
  private nextYield = 0;
  private outstanding = 0;
  private readonly held = new Set<LoaderBatch>();
  private previous: LoaderBatch | null = null;
  private readonly work = new Set<Promise<unknown>>();
  private failure: TrellisError | null = null;
  private failureReported = false;
  private closing: Promise<void> | null = null;
  private iterating = false;

  private constructor(
    private readonly client: TrellisClient,
    private readonly ownsClient: boolean,
    private readonly local: LocalRows,
    shards: string[],
    opts: Required<Omit<LoaderOptions, keyof ShardColumns | 'populate' | 'workers'>>,
  ) {
    this.shards = shards;
    this.rows = local.rows;
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle;
    this.seed = opts.seed;
    this.epochs = opts.epochs;
    this.prefetch = opts.prefetch;
    this.autoRelease = opts.autoRelease;
    this.batchesPerEpoch = batchesPerEpoch(local.rows, opts.batchSize, opts.dropLast);
    this.total = this.batchesPerEpoch === 0 ? 0 : opts.epochs * this.batchesPerEpoch;
    this.orders = new OrderCache(local.rows, opts.shuffle, opts.seed);
  }

  /** @internal use openLoader() */
  static async open(store: TrellisClient | string, dataset: string, opts: LoaderOptions): Promise<DatasetLoader> {
    const o = checkOptions(opts);
    if (typeof dataset !== 'string' || dataset.length === 0)
      throw invalidParameter('dataset', 'a dataset name or id', dataset);
    let client: TrellisClient;
    const ownsClient = typeof store === 'string';
    if (typeof store === 'string') client = await connect({ socket: store, name: `loader ${process.pid}` });
    else if (store && typeof (store as TrellisClient).createBlob === 'function' && 'socketPath' in store)
      client = store;
    else throw invalidParameter('store', 'a TrellisClient (IPC) or a socket path', store);

    let shards: string[] = [];
    let pinned = false;
    try {
      const loc = await client.locate(dataset);
      shards = loc.shards.filter((s) => s.instanceId === client.instanceId).map((s) => s.id);
      if (shards.length === 0) {
        throw new TrellisError(
          'ERR_OBJECT_REMOTE',
          `dataset ${JSON.stringify(dataset)} has no shards on this store (instance ${client.instanceId}); ` +
            `its ${loc.shards.length} shards are on instances ${[...new Set(loc.shards.map((s) => s.instanceId))].join(', ')}`,
        );
      }
      const values = await client.getMany(shards);
      pinned = true;
      const parts = values.flatMap((v, i) => shardParts(v, shards[i], opts));
      const local = new LocalRows(parts);
      const loader = new DatasetLoader(client, ownsClient, local, shards, o);
      await loader.startWorkers(o.workers, opts, o.populate);
      return loader;
    } catch (e) {
      if (pinned) await Promise.all(shards.map((id) => client.release(id).catch(() => {})));
      if (ownsClient) await client.close();
      throw e;
    }
  }

  /** The gather workers' process ids (empty when none run). */
  get workerPids(): number[] {
    return this.pool?.pids ?? [];
  }

  private async startWorkers(workers: number, cols: ShardColumns, populate: boolean): Promise<void> {
    if (workers === 0 || !this.needsGather()) return;
    this.pool = await GatherPool.start(
      workers,
      {
        socket: this.client.socketPath,
        shards: this.shards,
        featureColumn: cols.featureColumn,
        labelColumn: cols.labelColumn,
        shuffle: this.shuffle,
        seed: this.seed,
        rows: this.rows,
        populate,
      },
      { batch: (m) => this.received(m), failure: (e) => this.fail(e) },
    );
  }

  /** Whether any batch is gathered: all of them when shuffling, else those that span two parts. */
  private needsGather(): boolean {
    if (this.total === 0) return false;
    if (this.shuffle) return true;
    for (let i = 0; i < this.batchesPerEpoch; i++) {
      const [start, end] = batchRange(this.rows, this.batchSize, i);
      if (this.local.partOf(start) !== this.local.partOf(end - 1)) return true;
    }
    return false;
  }

  // ---- producing --------------------------------------------------------------

  /** Starts batches until `prefetch` exist. */
  private pump(): void {
    while (!this.closing && !this.failure && this.outstanding < this.prefetch && this.nextIssue < this.total) {
      this.issue(this.nextIssue++);
    }
  }

  private issue(seq: number): void {
    const epoch = Math.floor(seq / this.batchesPerEpoch);
    const index = seq % this.batchesPerEpoch;
    const [start, end] = batchRange(this.rows, this.batchSize, index);
    const slot = newSlot();
    this.slots.set(seq, slot);
    this.outstanding++;
    const view = this.shuffle ? null : this.local.view(start, end);
    if (view) {
      slot.resolve(this.makeBatch(view.x, view.y, epoch, index, 'view'));
    } else if (this.pool) {
      this.pool.submit({ epoch, index, start, end });
    } else {
      this.track(this.gatherHere(epoch, index, start, end).then(slot.resolve, (e) => this.fail(asTrellis(e))));
    }
  }

  private makeBatch(x: Tensor, y: Tensor, epoch: number, index: number, source: 'view' | 'gathered', id?: string) {
    return new LoaderBatch(this, x, y, epoch, index, index === this.batchesPerEpoch - 1, source, id);
  }

  /** workers: 0 — create, gather, seal, then pin and delete in the same round trip. */
  private async gatherHere(epoch: number, index: number, start: number, end: number): Promise<LoaderBatch> {
    const layout = this.local.layout(end - start);
    const w = await this.client.createBlob(layout.size);
    try {
      this.local.gather(w.buffer, this.orders.get(epoch), start, end);
    } catch (e) {
      await w.abort().catch(() => {});
      throw e;
    }
    return this.adopt(w.id, epoch, index, w.seal());
  }

  /** A worker sealed a batch: pin it and mark it deleted, so it lives exactly as long as our reference. */
  private received(m: BatchMessage): void {
    const seq = m.epoch * this.batchesPerEpoch + m.index;
    const slot = this.slots.get(seq);
    const p = this.adopt(m.id, m.epoch, m.index);
    this.track(
      p.then(
        (b) => {
          this.pool?.ack(m.id);
          if (slot && !this.closing) slot.resolve(b);
          else void this.freeBatch(b);
        },
        (e) => this.fail(asTrellis(e)),
      ),
    );
  }

  /**
   * Gets the batch blob and deletes it in one round trip (pipelined after
   * `sealed`, when given): the store frees it on our release, or when this
   * connection closes, whatever happens to the process.
   */
  private async adopt(id: string, epoch: number, index: number, sealed?: Promise<unknown>): Promise<LoaderBatch> {
    const [, bytes] = await Promise.all([sealed, this.client.getBlob(id), this.client.delete(id)]);
    const [start, end] = batchRange(this.rows, this.batchSize, index);
    const views = this.local.batchViews(bytes, end - start);
    return this.makeBatch(views.x, views.y, epoch, index, 'gathered', id);
  }

  private track(p: Promise<unknown>): void {
    const q = p.catch(() => {}).finally(() => this.work.delete(q));
    this.work.add(q);
  }

  // ---- consuming --------------------------------------------------------------

  [Symbol.asyncIterator](): AsyncIterableIterator<Batch> {
    if (this.iterating) throw new TrellisError('ERR_BAD_REQUEST', 'a loader can be iterated once; open another');
    this.iterating = true;
    return this;
  }

  /** The next batch in order; { done: true } after the last epoch or after close. */
  async next(): Promise<IteratorResult<Batch, undefined>> {
    if (this.failure) return this.throwFailure();
    if (this.autoRelease && this.previous) {
      const prev = this.previous;
      this.previous = null;
      this.track(prev.release().catch((e) => this.fail(asTrellis(e))));
    }
    if (this.closing) return { done: true, value: undefined };
    if (this.nextYield >= this.total) {
      if (this.autoRelease) await this.close();
      else await this.pool?.close();
      return { done: true, value: undefined };
    }
    if (this.held.size >= this.prefetch) {
      throw new TrellisError(
        'ERR_BAD_REQUEST',
        `you hold ${this.held.size} batches, the loader's whole prefetch (${this.prefetch}): release one before asking for the next`,
      );
    }
    this.pump();
    const seq = this.nextYield;
    const slot = this.slots.get(seq)!;
    let batch: LoaderBatch;
    try {
      batch = await slot.promise;
    } catch (e) {
      if (this.failure) return this.throwFailure();
      if (this.closing) return { done: true, value: undefined };
      throw e;
    }
    this.slots.delete(seq);
    this.nextYield++;
    if (this.closing) {
      // closed while we waited: the batch was freed with the rest
      return { done: true, value: undefined };
    }
    this.held.add(batch);
    this.previous = batch;
    return { done: false, value: batch };
  }

  /** Leaving a for-await loop early closes the loader. */
  async return(): Promise<IteratorResult<Batch, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /** Throws the failure once (after cleaning up); the iteration is over after that. */
  private async throwFailure(): Promise<IteratorResult<Batch, undefined>> {
    await this.close();
    if (this.failureReported) return { done: true, value: undefined };
    this.failureReported = true;
    throw this.failure;
  }

  /** @internal */
  async releaseBatch(b: LoaderBatch): Promise<void> {
    if (b.released) return;
    b.released = true;
    this.held.delete(b);
    if (this.previous === b) this.previous = null;
    this.outstanding--;
    if (this.closing) return this.freeBatch(b);
    await this.freeBatch(b, true);
    this.pump();
  }

  /** Drops our reference to a gathered batch's blob, which frees it (it was deleted on arrival). */
  private async freeBatch(b: LoaderBatch, throwErrors = false): Promise<void> {
    if (b.freed || b.source === 'view') return;
    b.freed = true;
    try {
      await this.client.release(b.id!);
    } catch (e) {
      if (throwErrors) throw e;
    }
  }

  private fail(err: TrellisError): void {
    if (this.failure || this.closing) return;
    this.failure = err;
    for (const s of this.slots.values()) s.reject(err);
    void this.close();
  }

  // ---- closing ----------------------------------------------------------------

  /**
   * Stops the workers (waiting until they have exited), frees every batch —
   * also those you hold — and releases the shards; closes the connection if
   * the loader opened it. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const closed = new TrellisError('ERR_CLOSED', 'the loader was closed');
    for (const s of this.slots.values()) s.reject(this.failure ?? closed);
    const orphans = (await this.pool?.close()) ?? [];
    // Batches being received or gathered settle first, so none is missed below.
    while (this.work.size > 0) await Promise.all([...this.work]);
    const frees: Promise<unknown>[] = [];
    for (const s of this.slots.values()) if (s.batch) frees.push(this.freeBatch(s.batch));
    for (const b of this.held) frees.push(this.freeBatch(b));
    frees.push(...orphans.map((id) => this.deleteOrphan(id)));
    await Promise.all(frees);
    this.slots.clear();
    this.held.clear();
    await Promise.all(this.shards.map((id) => this.client.release(id).catch(() => {})));
    if (this.ownsClient) await this.client.close();
  }

  /**
   * A blob a worker announced and never handed over: sealed (delete it) or
   * not (the store aborts it when it sees the worker's connection close,
   * which may come a moment after the worker's exit).
   */
  private async deleteOrphan(id: string): Promise<void> {
    const deadline = Date.now() + ORPHAN_WAIT_MS;
    for (;;) {
      try {
        await this.client.delete(id);
        return;
      } catch (e) {
        if (!isTrellisError(e, 'ERR_NOT_SEALED') || Date.now() > deadline) return;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function newSlot(): Slot {
  const slot = {} as Slot;
  slot.promise = new Promise<LoaderBatch>((resolve, reject) => {
    slot.resolve = (b) => {
      slot.batch = b;
      resolve(b);
    };
    slot.reject = reject;
  });
  slot.promise.catch(() => {});
  return slot;
}

function asTrellis(e: unknown): TrellisError {
  return e instanceof TrellisError
    ? e
    : new TrellisError('ERR_INTERNAL', `loader: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

function checkOptions(opts: LoaderOptions) {
  if (opts === null || typeof opts !== 'object') throw invalidParameter('opts', 'an options object', opts);
  const posInt = (name: string, v: unknown, min: number) => {
    if (!Number.isSafeInteger(v) || (v as number) < min) throw invalidParameter(name, `an integer >= ${min}`, v);
    return v as number;
  };
  const bool = (name: string, v: unknown, dflt: boolean) => {
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw invalidParameter(name, 'a boolean', v);
    return v;
  };
  const batchSize = posInt('batchSize', opts.batchSize, 1);
  const workers = opts.workers === undefined ? 1 : posInt('workers', opts.workers, 0);
  const epochs =
    opts.epochs === Number.POSITIVE_INFINITY
      ? opts.epochs
      : opts.epochs === undefined
        ? 1
        : posInt('epochs', opts.epochs, 1);
  const prefetch = opts.prefetch === undefined ? 2 * Math.max(workers, 1) + 1 : posInt('prefetch', opts.prefetch, 1);
  const shuffle = bool('shuffle', opts.shuffle, false);
  let seed = opts.seed;
  if (seed === undefined) seed = randomInt(2 ** 47);
  else if (!Number.isSafeInteger(seed) || seed < 0) throw invalidParameter('seed', 'a non-negative safe integer', seed);
  for (const k of ['featureColumn', 'labelColumn'] as const) {
    if (opts[k] !== undefined && (typeof opts[k] !== 'string' || opts[k] === ''))
      throw invalidParameter(k, 'a column name', opts[k]);
  }
  return {
    batchSize,
    workers,
    epochs,
    prefetch,
    shuffle,
    seed,
    dropLast: bool('dropLast', opts.dropLast, false),
    autoRelease: bool('autoRelease', opts.autoRelease, true),
    populate: bool('populate', opts.populate, true),
  };
}
