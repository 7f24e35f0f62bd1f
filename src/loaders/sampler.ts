/**
 * The order a loader visits rows in, and how an epoch splits into batches.
 *
 * A shuffled epoch is one permutation of every local row (across shards, not
 * shard by shard), drawn from a PRNG seeded by (seed, epoch) alone, so any
 * process that knows the seed — the consumer and each gather worker — computes
 * the same order without exchanging it. The generator is xoshiro128** seeded
 * through splitmix32; Fisher–Yates draws 53-bit uniforms, so the bias of the
 * bounded draws is below 2^-30 for any dataset that fits in memory.
 */
import { invalidParameter } from '../errors.js';

/** Largest number of rows one loader can address (indices are stored as uint32). */
export const MAX_ROWS = 2 ** 32 - 1;

function splitmix32(state: number): () => number {
  let a = state | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

/** xoshiro128**: 32-bit outputs, period 2^128 - 1. */
function xoshiro128(seedWords: () => number): () => number {
  let a = seedWords();
  let b = seedWords();
  let c = seedWords();
  let d = seedWords();
  if ((a | b | c | d) === 0) a = 1;
  return () => {
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9);
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return r >>> 0;
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A uniform double in [0, 1) with 53 random bits, from (seed, epoch). */
export function seededRandom(seed: number, epoch: number): () => number {
  checkSeed(seed);
  // Fold the high and low halves of the seed and the epoch into the splitmix state.
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  const mix = splitmix32(lo ^ Math.imul(hi, 0x85ebca6b) ^ Math.imul(epoch + 1, 0xc2b2ae35));
  const next = xoshiro128(mix);
  return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
}

export function checkSeed(seed: unknown): asserts seed is number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw invalidParameter('seed', 'a non-negative safe integer', seed);
  }
}

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
