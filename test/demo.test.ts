import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { datasetInstalled, generateSplit, parseIdx } from '../dist/examples/training/fashion-mnist.js';
import { CLI } from './helpers/store.js';

function demo(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, 'demo', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('trellis demo', () => {
  it.runIf(datasetInstalled())(
    'shares the real Fashion-MNIST in place and trains softmax regression past the published 0.842',
    () => {
      const r = demo(['--readers', '2']);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toContain('Fashion-MNIST from /usr/share/datasets/fashion-mnist (60000 train / 10000 test)');
      expect(r.out).toContain('as dataset "fmnist/train" (4 shards, 44.9 MiB)');
      expect(r.out).toMatch(/all 4 readers agree/);
      expect(r.out).toMatch(/copied between processes by trellis: 0 MiB/);
      expect(r.out.match(/^ {3}epoch +\d+ +loss /gm)?.length).toBe(15);
      const acc = Number(/test accuracy ([\d.]+)%/.exec(r.out)?.[1]);
      expect(acc).toBeGreaterThanOrEqual(84);
    },
  );

  it('falls back to a generated dataset of the same shape, and says so', () => {
    const r = demo(['--readers', '1', '--data-dir', '/nonexistent', '--epochs', '1']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('GENERATED stand-in of the same shape (60000 / 10000)');
    expect(r.out).toMatch(/all 2 readers agree/);
    expect(r.out).toMatch(/test accuracy [\d.]+%/);
  });
});

describe('IDX parsing', () => {
  it('reads a uint8 IDX file and rejects bad headers and sizes', () => {
    const body = new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]);
    expect(Array.from(parseIdx(body, 1).data)).toEqual([7, 8, 9]);
    expect(() => parseIdx(body, 3)).toThrow(/rank 3/);
    expect(() => parseIdx(body.subarray(0, 10), 1)).toThrowError(
      expect.objectContaining({ code: 'ERR_SIZE_MISMATCH' }),
    );
  });

  it('generates a deterministic stand-in', () => {
    const a = generateSplit(100, 7);
    const b = generateSplit(100, 7);
    expect(a.images).toEqual(b.images);
    expect(Array.from(a.labels).filter((l) => !(l >= 0 && l < 10))).toEqual([]);
  });
});
