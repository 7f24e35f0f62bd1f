/**
 * The order a loader visits rows in, and how an epoch splits into batches.
 *
 * A shuffled epoch is one permutation of every local row (across shards, not
 * shard by shard), drawn from a PRNG seeded by (seed, epoch) alone, so any
 * process that knows the seed — the consumer and each gather worker — computes
 * the same order without exchanging it. Fisher–Yates draws the 53-bit
 * uniforms of `seededRandom` (src/random.ts), so the bias of the bounded draws
 * is below 2^-30 for any dataset that fits in memory.
 */
import { invalidParameter } from '../errors.js';
import { seededRandom } from '../random.js';

/** Largest number of rows one loader can address (indices are stored as uint32). */
const MAX_ROWS = 2 ** 32 - 1;

/**
 * The row order of one epoch: a permutation of 0..rows-1 for (seed, epoch)
 * when shuffling, null for the natural order (row i is position i).
 */
export function epochOrder(rows: number, shuffle: boolean, seed: number, epoch: number): Uint32Array | null {
  if (!shuffle) return null;
  if (rows > MAX_ROWS) throw invalidParameter('rows', `at most ${MAX_ROWS}`, rows);
  const order = new Uint32Array(rows);
  for (let i = 0; i < rows; i++) order[i] = i;
  const rand = seededRandom(seed, epoch);
  for (let i = rows - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** How many batches an epoch of `rows` rows has. */
export function batchesPerEpoch(rows: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(rows / batchSize) : Math.ceil(rows / batchSize);
}

/** Positions [start, end) in the epoch order that batch `index` covers. */
export function batchRange(rows: number, batchSize: number, index: number): [number, number] {
  const start = index * batchSize;
  return [start, Math.min(start + batchSize, rows)];
}

/**
 * Keeps the order of the epoch in use, so each process computes a
 * permutation once per epoch (tasks arrive in epoch order, with a small
 * overlap at the boundary while prefetching runs ahead).
 */
export class OrderCache {
  private readonly cache = new Map<number, Uint32Array | null>();

  constructor(
    private readonly rows: number,
    private readonly shuffle: boolean,
    private readonly seed: number,
  ) {}

  get(epoch: number): Uint32Array | null {
    let order = this.cache.get(epoch);
    if (order === undefined) {
      order = epochOrder(this.rows, this.shuffle, this.seed, epoch);
      this.cache.set(epoch, order);
      // Earlier epochs are done once a later one is asked for, give or take the prefetch overlap.
      for (const e of this.cache.keys()) if (e < epoch - 1) this.cache.delete(e);
    }
    return order;
  }
}
