/**
 * The sharded dataset loader: batches over the shards of a dataset that live
 * on this node's store, as tensor views over shared memory.
 *
 * - Sequential (shuffle off): a batch whose rows sit in one shard (one part of
 *   it, for Arrow shards: one record batch) is a view of the shard itself, a
 *   subarray of its tensors: no gather, no copy, no arena memory. A batch that
 *   spans two shards is gathered like a shuffled one; write shards whose row
 *   count is a multiple of the batch size (writeDataset's `alignRows`) and
 *   every batch is a view.
 * - Shuffled: each epoch visits every local row once, in a permutation over
 *   all of them (across shards) drawn from (seed, epoch). Batches are
 *   gathered into arena blobs — by N worker processes (`workers`), or in this
 *   process with `workers: 0` — and handed over as views of those blobs. A
 *   worker gathers a few consecutive batches into one blob (a group), so one
 *   set of round trips serves them all; the group's memory is freed when its
 *   last batch is released.
 *
 * Backpressure: gathered batches take `prefetch` slots — gathering, ready, or
 * held by you — and workers wait for free slots; views take none (they hold
 * no memory). A batch is valid until it is released: by you
 * (`batch.release()`), or, with `autoRelease` (the default), when you ask for
 * the next one. Batches come in order (epoch, index), whichever worker made
 * them.
 *
 * Closing (`close()`, leaving a for-await loop early, or the end of the last
 * epoch with autoRelease) stops the workers and waits until they have exited,
 * deletes what they had allocated, frees every batch and releases the
 * shards. A worker that dies or fails makes the next call fail with its error
 * — code ERR_WORKER_FAILED for a crash, the worker's own code (e.g.
 * ERR_OUT_OF_MEMORY) for a Trellis error — after that cleanup.
 *
 * @example
 *   await using loader = await openLoader(client, 'fmnist/train', { batchSize: 256, shuffle: true, seed: 1, workers: 2 });
 *   for await (const b of loader) train(b.x, b.y); // b.x: Tensor [256, 28, 28] over shared memory
 */
import { randomInt } from 'node:crypto';
import type { TrellisClient } from '../client/client.js';
import { connect } from '../client/connect.js';
import { servingCopy } from '../client/shard-copies.js';
import type { StoreClient } from '../client/store-client.js';
import type { Tensor } from '../codecs/tensor.js';
import { asTrellisError, invalidParameter, isTrellisError, TrellisError } from '../errors.js';
import type { BatchMessage } from './gather-messages.js';
import { GatherPool } from './gather-pool.js';
import { LocalRows } from './local-rows.js';
import { batchesPerEpoch, batchRange, OrderCache } from './sampler.js';
import { type ShardColumns, shardParts } from './shard.js';

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
  /**
   * Gathered batches that may exist at once, those you hold included. Default: room for two groups
   * of about 8 MiB of batches (at most 16 batches) per worker and two on your side.
   */
  prefetch?: number;
  /** Gather worker processes (default 1); 0 gathers in this process. Started only when some batch needs gathering. */
  workers?: number;
  /** Release each batch when the next is asked for (default true). */
  autoRelease?: boolean;
  /** Pre-fault the shards in each worker at start, instead of a page fault per first touch (default true). */
  populate?: boolean;
  /**
   * The first batch to hand out (default epoch 0, index 0): a run resumed
   * from a checkpoint continues where it stopped, with the same batches it
   * would have had (the order depends only on seed and epoch).
   */
  start?: { epoch: number; index: number };
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
  /** 'view': x and y are views of a shard; 'gathered': of the arena blob `id` (shared by the batches of a group). */
  readonly source: 'view' | 'gathered';
  readonly id?: string;
  /**
   * Frees the batch (its slot; its memory with the last batch of its group). Its views are invalid
   * afterwards. Resolves without waiting for the store: later requests on the loader's client see the
   * memory freed, and a failure to free ends the loader (its next call throws it). Safe to call twice.
   */
  release(): Promise<void>;
}

/** One gathered blob holding `count` consecutive batches. */
interface Group {
  id: string;
  count: number;
  /** Batches not yet released. */
  live: number;
  /** Our reference in the store was dropped (the blob is freed). */
  freed: boolean;
}

interface PrefetchSlot {
  promise: Promise<LoaderBatch>;
  resolve(b: LoaderBatch): void;
  reject(e: unknown): void;
}

class LoaderBatch implements Batch {
  released = false;
  constructor(
    private readonly loader: DatasetLoader,
    readonly x: Tensor,
    readonly y: Tensor,
    readonly epoch: number,
    readonly index: number,
    readonly lastOfEpoch: boolean,
    readonly group: Group | null,
  ) {}

  get source(): 'view' | 'gathered' {
    return this.group ? 'gathered' : 'view';
  }

  get id(): string | undefined {
    return this.group?.id;
  }

  release(): Promise<void> {
    return this.loader.releaseBatch(this);
  }
}

/** How long close waits for the store to notice a dead worker's connection before giving up on its blobs. */
const ORPHAN_WAIT_MS = 5_000;
/**
 * A group aims at this many bytes: enough that the work per blob stops
 * mattering. Each group costs five store requests and two worker messages,
 * about 250 µs of CPU across the consumer, the store and the worker; in groups
 * of 3 batches of 768 KiB (the 2 MiB this used to be) that was 300 µs of CPU
 * per batch in all, in groups of 11 it is 190 (bench/loader.js's 2 GiB set).
 */
const GROUP_BYTES = 8 * 1024 * 1024;
/** At most this many batches per group, so the first batch of a group does not wait long for the others. */
const MAX_GROUP = 16;

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
  /** Batches gathered into one blob (a group), at most. */
  readonly groupSize: number;
  /** The local shard ids, in dataset order. */
  readonly shards: string[];

  private readonly total: number;
  private readonly orders: OrderCache;
  private pool: GatherPool | null = null;
  /** Sequential mode: which batch indices span two parts and are gathered (all are when shuffling). */
  private readonly spans: Uint8Array | null;
  private readonly anyGathered: boolean;
  /** Gathered batches in the making or made and not yet handed out, by sequence number (epoch * batchesPerEpoch + index). */
  private readonly slots = new Map<number, PrefetchSlot>();
  /** Next sequence number to consider for gathering; runs ahead of nextYield. */
  private nextGather = 0;
  private nextYield = 0;
  /** Prefetch slots taken: batches of groups issued and not yet freed. */
  private outstanding = 0;
  /** Groups adopted and not yet freed. */
  private readonly groups = new Set<Group>();
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
    opts: ReturnType<typeof checkOptions>,
  ) {
    this.shards = shards;
    this.rows = local.rows;
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle;
    this.seed = opts.seed;
    this.epochs = opts.epochs;
    // Groups of about GROUP_BYTES. By default, slots for two groups per worker (one gathered, the next
    // queued with its blob already asked for, so a worker never waits for a task or a blob) and two on
    // the consumer's side (one in your hands, one arriving): with one group per worker, workers sat
    // idle 30% of the time waiting for the consumer's release to come back as a task.
    const workers = Math.max(opts.workers, 1);
    const batchBytes = local.layout(opts.batchSize).size;
    const target = opts.shuffle ? Math.min(MAX_GROUP, Math.ceil(GROUP_BYTES / batchBytes)) : 1;
    this.prefetch = opts.prefetch ?? (2 * workers + 2) * target;
    this.autoRelease = opts.autoRelease;
    this.batchesPerEpoch = batchesPerEpoch(local.rows, opts.batchSize, opts.dropLast);
    this.total = this.batchesPerEpoch === 0 ? 0 : opts.epochs * this.batchesPerEpoch;
    this.nextGather = this.nextYield = Math.min(
      this.total,
      opts.start.epoch * this.batchesPerEpoch + Math.min(opts.start.index, this.batchesPerEpoch),
    );
    this.orders = new OrderCache(local.rows, opts.shuffle, opts.seed);
    this.spans = null;
    if (!this.shuffle) {
      this.spans = new Uint8Array(this.batchesPerEpoch);
      for (let i = 0; i < this.batchesPerEpoch; i++) {
        const [start, end] = batchRange(this.rows, this.batchSize, i);
        this.spans[i] = local.partOf(start) === local.partOf(end - 1) ? 0 : 1;
      }
    }
    this.anyGathered = this.total > 0 && (this.spans === null || this.spans.includes(1));
    // Groups small enough that each worker and the consumer can have one in flight.
    this.groupSize = Math.max(1, Math.min(target, Math.floor(this.prefetch / (workers + 1))));
  }

  /** @internal use openLoader() */
  static async open(store: TrellisClient | string, dataset: string, opts: LoaderOptions): Promise<DatasetLoader> {
    const o = checkOptions(opts);
    if (typeof dataset !== 'string' || dataset.length === 0)
      throw invalidParameter('dataset', 'a dataset name or id', dataset);
    let client: TrellisClient;
    const ownsClient = typeof store === 'string';
    const isClient = store && typeof (store as StoreClient).createBlob === 'function';
    if (typeof store === 'string') client = await connect({ socket: store, name: `loader ${process.pid}` });
    else if (isClient && (store as StoreClient).transport === 'ipc') client = store;
    else if (isClient)
      throw new TrellisError('ERR_UNSUPPORTED', 'the loader hands out views of shared memory: connect over IPC');
    else throw invalidParameter('store', 'a TrellisClient (IPC) or a socket path', store);

    let shards: string[] = [];
    let pinned = false;
    try {
      const loc = await client.locate(dataset);
      // Each shard is read where its serving copy is (the primary while it lives), so readers never overlap.
      const serving = loc.shards.map(servingCopy);
      shards = serving.filter((c) => c?.instanceId === client.instanceId).map((c) => c!.id);
      if (shards.length === 0) {
        throw new TrellisError(
          'ERR_OBJECT_REMOTE',
          `dataset ${JSON.stringify(dataset)} has no shards on this store (instance ${client.instanceId}); ` +
            `its ${loc.shards.length} shards are on instances ${[...new Set(serving.map((c) => c?.instanceId ?? -1))].join(', ')}`,
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
    if (workers === 0 || !this.anyGathered) return;
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
        batchSize: this.batchSize,
        populate,
      },
      { batch: (m) => this.received(m), failure: (e) => this.fail(e) },
    );
  }

  private isGathered(index: number): boolean {
    return this.spans === null || this.spans[index] === 1;
  }

  // ---- producing --------------------------------------------------------------

  /**
   * Starts gathering ahead of the consumer while prefetch slots are free: a
   * whole group at a time (a smaller one only at the end of an epoch), so
   * groups do not shrink to single batches as slots free up one by one.
   */
  private pump(): void {
    if (!this.anyGathered) return;
    while (!this.closing && !this.failure && this.nextGather < this.total) {
      const seq = this.nextGather;
      const index = seq % this.batchesPerEpoch;
      if (!this.isGathered(index)) {
        this.nextGather++;
        continue;
      }
      const count = Math.min(this.groupSize, this.batchesPerEpoch - index, this.total - seq);
      if (this.outstanding + count > this.prefetch) return;
      this.nextGather += count;
      this.issue(seq, count);
    }
  }

  private issue(seq: number, count: number): void {
    const epoch = Math.floor(seq / this.batchesPerEpoch);
    const index = seq % this.batchesPerEpoch;
    for (let j = 0; j < count; j++) this.slots.set(seq + j, newPrefetchSlot());
    this.outstanding += count;
    if (this.pool) this.pool.submit({ epoch, index, count });
    else this.track(this.gatherHere(epoch, index, count).catch((e) => this.fail(e)));
  }

  /** workers: 0 — create, gather, then seal, pin and delete in one round trip. */
  private async gatherHere(epoch: number, index: number, count: number): Promise<void> {
    const g = this.local.groupLayout(this.batchSize, index, count);
    const w = await this.client.createBlob(g.size);
    try {
      const order = this.orders.get(epoch);
      g.ranges.forEach(([start, end], j) => {
        this.local.gather(w.buffer.subarray(g.offsets[j]), order, start, end);
      });
    } catch (e) {
      await w.abort().catch(() => {});
      throw e;
    }
    await this.adopt(w.id, epoch, index, count, w.seal());
  }

  /** A worker sealed a group. */
  private received(m: BatchMessage): void {
    this.track(
      this.adopt(m.id, m.epoch, m.index, m.count).then(
        () => this.pool?.ack(m.id),
        (e) => this.fail(e),
      ),
    );
  }

  /**
   * Takes a sealed group over: gets its blob and deletes it in one round trip
   * (after `sealed`, when given), so it lives exactly as long as our
   * reference — the store frees it on our release, or when this connection
   * closes, whatever happens to this process — and hands out its batches.
   */
  private async adopt(id: string, epoch: number, index: number, count: number, sealed?: Promise<unknown>) {
    const [s, got, del] = await Promise.allSettled([sealed, this.client.getBlob(id), this.client.delete(id)]);
    if (got.status === 'rejected' || s.status === 'rejected' || del.status === 'rejected') {
      // A get that worked while the rest failed (the worker deleted the group as it shut down) holds a reference: give it back.
      if (got.status === 'fulfilled') await this.client.release(id).catch(() => {});
      throw [s, got, del].find((r) => r.status === 'rejected')!.reason;
    }
    const bytes = got.value;
    const group: Group = { id, count, live: count, freed: false };
    this.groups.add(group);
    if (this.closing) {
      await this.freeGroup(group);
      return;
    }
    const g = this.local.groupLayout(this.batchSize, index, count);
    const seq = epoch * this.batchesPerEpoch + index;
    g.ranges.forEach(([start, end], j) => {
      const views = this.local.batchViews(bytes.subarray(g.offsets[j]), end - start);
      this.slots.get(seq + j)?.resolve(this.makeBatch(views.x, views.y, seq + j, group));
    });
  }

  private makeBatch(x: Tensor, y: Tensor, seq: number, group: Group | null): LoaderBatch {
    const epoch = Math.floor(seq / this.batchesPerEpoch);
    const index = seq % this.batchesPerEpoch;
    return new LoaderBatch(this, x, y, epoch, index, index === this.batchesPerEpoch - 1, group);
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
    const prev = this.previous;
    if (this.autoRelease && prev) {
      this.previous = null;
      // a view holds nothing: no promise for it on the hot path
      if (prev.group === null) prev.released = true;
      else this.track(prev.release().catch((e) => this.fail(e)));
    }
    if (this.closing) return { done: true, value: undefined };
    if (this.nextYield >= this.total) {
      if (this.autoRelease) await this.close();
      else await this.pool?.close();
      return { done: true, value: undefined };
    }
    this.pump();
    const seq = this.nextYield;
    const index = seq % this.batchesPerEpoch;
    if (!this.isGathered(index)) {
      // a view of a shard: made when asked for, no memory, no slot
      this.nextYield++;
      const [start, end] = batchRange(this.rows, this.batchSize, index);
      const view = this.local.view(start, end)!;
      const batch = this.makeBatch(view.x, view.y, seq, null);
      this.previous = batch;
      return { done: false, value: batch };
    }
    const slot = this.slots.get(seq);
    if (!slot) {
      // Every slot is taken by batches you hold: nothing can be gathered until you release one.
      throw new TrellisError(
        'ERR_BAD_REQUEST',
        `you hold batches taking all ${this.prefetch} prefetch slots (groups of up to ${this.groupSize}); ` +
          'release some before asking for the next',
      );
    }
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
    // closed while we waited: the batch was freed with the rest
    if (this.closing) return { done: true, value: undefined };
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
    if (this.previous === b) this.previous = null;
    const g = b.group;
    if (!g || --g.live > 0) return; // views hold nothing; a group goes with its last batch
    if (this.closing) return this.freeGroup(g);
    // Not awaited: a training loop that awaits release() would wait a store round trip per group
    // (up to 1 ms each on a loaded machine, 35-45 ms an epoch in bench/training.js). This
    // connection's requests are answered in order, so whatever this client asks next sees the
    // memory freed; the next group is issued once it is (the store never holds more than
    // `prefetch` batches); a failure ends the loader like a worker's.
    this.track(
      this.freeGroup(g, true).then(
        () => this.pump(),
        (e) => this.fail(e),
      ),
    );
  }

  /** Drops our reference to a group's blob, which frees it (it was deleted on arrival), and its slots. */
  private async freeGroup(g: Group, throwErrors = false): Promise<void> {
    if (g.freed) return;
    g.freed = true;
    this.groups.delete(g);
    this.outstanding -= g.count;
    try {
      await this.client.release(g.id);
    } catch (e) {
      if (throwErrors) throw e;
    }
  }

  /** The first failure ends the loader; what is not a TrellisError is a bug (ERR_INTERNAL). */
  private fail(e: unknown): void {
    if (this.failure || this.closing) return;
    const err = asTrellisError(e, 'ERR_INTERNAL', 'loader');
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
    // Groups being received or gathered settle first (freeing themselves), so none is missed below.
    while (this.work.size > 0) await Promise.all([...this.work]);
    await Promise.all([
      ...[...this.groups].map((g) => this.freeGroup(g)),
      ...orphans.map((id) => this.deleteOrphan(id)),
    ]);
    this.slots.clear();
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

function newPrefetchSlot(): PrefetchSlot {
  const slot = {} as PrefetchSlot;
  slot.promise = new Promise<LoaderBatch>((resolve, reject) => {
    slot.resolve = resolve;
    slot.reject = reject;
  });
  slot.promise.catch(() => {});
  return slot;
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
  const prefetch = opts.prefetch === undefined ? undefined : posInt('prefetch', opts.prefetch, 1);
  const shuffle = bool('shuffle', opts.shuffle, false);
  let seed = opts.seed;
  if (seed === undefined) seed = randomInt(2 ** 47);
  else if (!Number.isSafeInteger(seed) || seed < 0) throw invalidParameter('seed', 'a non-negative safe integer', seed);
  for (const k of ['featureColumn', 'labelColumn'] as const) {
    if (opts[k] !== undefined && (typeof opts[k] !== 'string' || opts[k] === ''))
      throw invalidParameter(k, 'a column name', opts[k]);
  }
  const start = opts.start ?? { epoch: 0, index: 0 };
  if (start === null || typeof start !== 'object') throw invalidParameter('start', '{ epoch, index }', start);
  posInt('start.epoch', start.epoch, 0);
  posInt('start.index', start.index, 0);
  return {
    batchSize,
    workers,
    epochs,
    prefetch,
    shuffle,
    seed,
    start: { epoch: start.epoch, index: start.index },
    dropLast: bool('dropLast', opts.dropLast, false),
    autoRelease: bool('autoRelease', opts.autoRelease, true),
    populate: bool('populate', opts.populate, true),
  };
}
