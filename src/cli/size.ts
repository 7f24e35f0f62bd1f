import { TrellisError } from '../errors.js';

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Parses a size: plain bytes or a number with K/M/G/T (binary units), e.g. 512M, 16G, 1.5G. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw new TrellisError('ERR_BAD_REQUEST', `bad size ${text}`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(String(text));
  if (!m)
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `bad size ${JSON.stringify(text)}: use bytes or a number with K, M, G or T`,
    );
  const n = Math.floor(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  if (!Number.isSafeInteger(n)) throw new TrellisError('ERR_BAD_REQUEST', `size ${text} is too large`);
  return n;
}

/** A byte count for people, in the units parseSize reads: 0, 512, 1.5K, 64M, 1G. */
export function formatSize(bytes: number): string {
  const units = ['', 'K', 'M', 'G', 'T'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const text =
    u === 0 || Number.isInteger(v) ? String(v) : v < 10 ? v.toFixed(1).replace(/\.0$/, '') : String(Math.round(v));
  return `${text}${units[u]}`;
}
