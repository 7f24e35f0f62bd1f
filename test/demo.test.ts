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
    'shares the real Fashion-MNIST in place and, as a job over HTTP, trains softmax regression past the published 0.842',
    () => {
      const r = demo(['--readers', '2']);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toContain('Fashion-MNIST from /usr/share/datasets/fashion-mnist (60000 train / 10000 test)');
      expect(r.out).toMatch(
        /redis-server pid \d+ on 127\.0\.0\.1:\d+ \(AOF, noeviction\), jobs API http:\/\/127\.0\.0\.1:\d+/,
      );
      expect(r.out).toContain('as dataset "fmnist/train" (4 shards, 44.9 MiB)');
      expect(r.out).toMatch(/all 4 readers agree/);
      expect(r.out).toMatch(/task 0 placed on demo: rank 0 of 1 on demo: 4 shards, 44\.9 MiB \(44\.9 MiB local\)/);
      expect(r.out).toMatch(/^ {3}epoch +15 +step +9000 +loss /m); // the last progress event
      expect(r.out).toMatch(/^ {3}job succeeded$/m);
      expect(r.out).toMatch(/read on its own node: 44\.9 MiB; moved between nodes: 0\.0 MiB/);
      expect(r.out).toMatch(
        /readers' private memory, all 2 together: [+-][\d.]+ MiB reading in place, \+[\d.]+ MiB fed by copying \(89\.8 MiB copied to them\)/,
      );
      const acc = Number(
        /test accuracy ([\d.]+)% on 10000 images \(published logistic regression: 84\.2%\)/.exec(r.out)?.[1],
      );
      expect(acc).toBeGreaterThanOrEqual(84);
    },
  );

  it('falls back to a generated dataset of the same shape, says so, and never sets its accuracy beside the published one', () => {
    const r = demo(['--readers', '1', '--data-dir', '/nonexistent', '--epochs', '1']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('GENERATED stand-in of the same shape (60000 / 10000)');
    expect(r.out).toMatch(/all 2 readers agree/);
    expect(r.out).toMatch(
      /accuracy on the generated stand-in [\d.]+% — not comparable with published Fashion-MNIST results/,
    );
    expect(r.out).not.toMatch(/test accuracy|published logistic regression/);
  });
});

describe('trellis demo --cluster 3', () => {
  // npm run demo:cluster end to end: etcd, redis-server, 3 stores with RPC, the API and 3 agents, all real processes.
  it.runIf(datasetInstalled())(
    'trains on 3 ranks where the shards are, with bit-identical parameters, then on 1 rank that moves the rest',
    () => {
      const r = spawnSync(process.execPath, [CLI, 'demo', '--cluster', '3', '--epochs', '1'], {
        encoding: 'utf8',
        timeout: 240_000,
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(
        'dataset: Fashion-MNIST from /usr/share/datasets/fashion-mnist (60000 train / 10000 test)',
      );
      expect(r.stdout).toContain(
        'dataset fmnist/train: 30 shards of 2000 rows spread over the nodes: node0 15.0 MiB, node1 15.0 MiB, node2 15.0 MiB',
      );
      for (const rank of [0, 1, 2]) {
        expect(r.stdout).toContain(
          `task ${rank} placed on node${rank}: rank ${rank} of 3 on node${rank}: 10 shards, 15.0 MiB (15.0 MiB local)`,
        );
      }
      expect(r.stdout).toContain(
        'task 0 placed on node0: rank 0 of 1 on node0: 30 shards, 44.9 MiB (15.0 MiB local, 29.9 MiB moved here first)',
      );
      expect(r.stdout.match(/^ {3}job succeeded$/gm)).toHaveLength(2);
      expect(r.stdout).toContain('results (effective batch 300 in both, softmax regression, 1 epoch):');
      expect(r.stdout).toMatch(
        /3 ranks: test accuracy [\d.]+% .*training bytes read locally 44\.9 MiB, moved 0\.0 MiB \(100\.0% local\)/,
      );
      expect(r.stdout).toMatch(
        /1 rank : test accuracy [\d.]+% .*read locally 15\.0 MiB, moved 29\.9 MiB \(33\.3% local\)/,
      );
      expect(r.stdout).toContain('the 3 ranks end with bit-identical parameters');
    },
  );
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
