/**
 * Seeded pseudo-random streams: every random sequence in Trellis that has to
 * replay from a number (a loader's shuffle, a synthetic data set, fuzz input,
 * test data) comes from here.
 *
 * Two generators, because the two needs differ:
 * - `xorshift32` (Marsaglia's 13/17/5 triple): 32-bit words from three shifts,
 *   period 2^32 - 1. For data whose values only need to look random and
 *   replay: synthetic images, fuzz bytes, benchmark patterns, test shuffles.
 *   Tests and the demo's fallback data set depend on its exact sequence.
 * - `seededRandom` (xoshiro128** seeded through splitmix32): 53-bit doubles
 *   with period 2^128 - 1, so Fisher–Yates over up to 2^32 rows stays unbiased
 *   to below 2^-30; the loader's epoch permutations.
 *
 * @example
 * const next = xorshift32(7);
 * const byte = next() & 0xff;
 * const rand = xorshift32Unit(7); // rand() in [0, 1)
 */
import { invalidParameter } from './errors.js';

/**
 * Uint32 words from xorshift32. The seed is taken modulo 2^32; 0, the one
 * state that never leaves itself, becomes 1.
 */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

/** Doubles in [0, 1): each xorshift32 word divided by 2^32. */
export function xorshift32Unit(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 0x100000000;
}

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

/**
 * Uniform doubles in [0, 1) with 53 random bits, one independent stream per
 * (seed, stream) pair (the loader passes the epoch as the stream).
 */
export function seededRandom(seed: number, stream: number): () => number {
  checkSeed(seed);
  // Fold the high and low halves of the seed and the stream into the splitmix state.
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  const mix = splitmix32(lo ^ Math.imul(hi, 0x85ebca6b) ^ Math.imul(stream + 1, 0xc2b2ae35));
  const next = xoshiro128(mix);
  return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
}

function checkSeed(seed: unknown): asserts seed is number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw invalidParameter('seed', 'a non-negative safe integer', seed);
  }
}
