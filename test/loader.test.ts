/**
 * The sharded dataset loader over a real store, with real gather worker
 * processes (dist/src/loaders/gather-worker.js, built by the suite's global
 * setup): coverage, determinism, reference gathers, zero-copy views.
 * Failure paths and shutdown are in loader-faults.test.ts.
 */

import { type Batch, connect, epochOrder, openLoader, type Tensor, type TrellisClient } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspect, putTestDataset, type SeenBatch, testData } from './helpers/loader.js';
import { startStore } from './helpers/store.js';

let env: Awaited<ReturnType<typeof startStore>>;
let c: TrellisClient;
const N = 1000;
const B = 64;
const data = testData(N);

beforeAll(async () => {
  env = await startStore({ size: 64 * 1024 * 1024 });
  c = await connect({ socket: env.socket });
  // 3 shards of 334/334/332 rows: not multiples of 64, so some sequential batches span two shards
  await putTestDataset(c, 'ds/3', data, { shards: 3 });
  // shard sizes rounded up to the batch size: every sequential batch fits in one shard
  await putTestDataset(c, 'ds/aligned', data, { shards: 3, alignRows: B });
  await putTestDataset(c, 'ds/arrow', data, { shards: 3, format: 'arrow' });
});
afterAll(async () => {
  await c?.close();
  await env?.stop();
});

async function collect(
  dataset: string,
  opts: Parameters<typeof openLoader>[2],
): Promise<{ seen: SeenBatch[]; pids: number[] }> {
  const loader = await openLoader(c, dataset, opts);
  const seen: SeenBatch[] = [];
  for await (const b of loader) seen.push(inspect(data, b));
  return { seen, pids: loader.workerPids };
}

function epochsOf(seen: SeenBatch[]): Map<number, SeenBatch[]> {
  const m = new Map<number, SeenBatch[]>();
  for (const s of seen) m.set(s.epoch, [...(m.get(s.epoch) ?? []), s]);
  return m;
}

describe('coverage: every sample exactly once per epoch', () => {
  for (const shuffle of [false, true]) {
    for (const dropLast of [false, true]) {
      for (const workers of [1, 2]) {
        it(`shuffle ${shuffle}, dropLast ${dropLast}, ${workers} worker(s)`, async () => {
          const { seen, pids } = await collect('ds/3', {
            batchSize: B,
            shuffle,
            dropLast,
            workers,
            seed: 5,
            epochs: 2,
          });
          expect(pids).toHaveLength(workers);
          const perEpoch = dropLast ? Math.floor(N / B) : Math.ceil(N / B);
          const epochs = epochsOf(seen);
          expect([...epochs.keys()]).toEqual([0, 1]);
          for (const batches of epochs.values()) {
            expect(batches.map((b) => b.index)).toEqual([...Array(perEpoch).keys()]);
            expect(batches.map((b) => b.lastOfEpoch)).toEqual(batches.map((_, i) => i === perEpoch - 1));
            const rows = batches.flatMap((b) => b.rows);
            expect(new Set(rows).size).toBe(rows.length); // no row twice
            expect(rows.length).toBe(dropLast ? perEpoch * B : N);
            if (!dropLast) expect([...rows].sort((a, b) => a - b)).toEqual([...Array(N).keys()]);
            if (!shuffle) expect(rows).toEqual([...Array(rows.length).keys()]);
            for (const b of batches) {
              expect(b.xMismatch).toBeNull();
              expect(b.shape).toEqual([b.rows.length, 2, 3]);
              if (b.index < perEpoch - 1 || dropLast) expect(b.rows.length).toBe(B);
            }
          }
        });
      }
    }
  }

  it('sequential: batches inside a shard are views, those spanning two shards are gathered', async () => {
    const { seen } = await collect('ds/3', { batchSize: B, workers: 1 });
    const spans = (b: SeenBatch) => Math.floor(b.rows[0] / 334) !== Math.floor(b.rows[b.rows.length - 1] / 334);
    for (const b of seen) expect(b.source).toBe(spans(b) ? 'gathered' : 'view');
    expect(seen.filter(spans).length).toBe(2);
  });

  it('gathers in this process with workers: 0', async () => {
    const { seen, pids } = await collect('ds/3', { batchSize: B, shuffle: true, workers: 0, seed: 5 });
    expect(pids).toEqual([]);
    expect(seen.map((b) => [b.xMismatch, b.source])).toEqual(seen.map(() => [null, 'gathered']));
    expect(seen).toHaveLength(Math.ceil(N / B));
    expect(new Set(seen.flatMap((b) => b.rows)).size).toBe(N);
  });
});

describe('determinism', () => {
  const orderOf = (seen: SeenBatch[]) => seen.map((b) => b.rows);
  const SEQUENTIAL = [...Array(N).keys()];

  it('the same seed gives the same batches, whatever the number of workers, and they are shuffled', async () => {
    const runs = await Promise.all(
      [0, 1, 2].map((workers) => collect('ds/3', { batchSize: B, shuffle: true, seed: 42, workers, epochs: 2 })),
    );
    expect(orderOf(runs[1].seen)).toEqual(orderOf(runs[0].seen));
    expect(orderOf(runs[2].seen)).toEqual(orderOf(runs[0].seen));
    // Equal because the seed fixes the permutation, not because nothing was permuted.
    const epoch0 = epochsOf(runs[0].seen)
      .get(0)!
      .flatMap((b) => b.rows);
    expect(epoch0).not.toEqual(SEQUENTIAL);
    expect([...epoch0].sort((x, y) => x - y)).toEqual(SEQUENTIAL);
    const other = await collect('ds/3', { batchSize: B, shuffle: true, seed: 43, workers: 0 });
    expect(other.seen.flatMap((b) => b.rows)).not.toEqual(epoch0);
  });

  it('a different seed, or the next epoch, gives a different order', async () => {
    const a = await collect('ds/3', { batchSize: B, shuffle: true, seed: 1, workers: 0, epochs: 2 });
    const b = await collect('ds/3', { batchSize: B, shuffle: true, seed: 2, workers: 0 });
    const e = epochsOf(a.seen);
    const first = e.get(0)!.flatMap((s) => s.rows);
    expect(first).not.toEqual(e.get(1)!.flatMap((s) => s.rows));
    expect(first).not.toEqual(b.seen.flatMap((s) => s.rows));
    // and it shuffles across shards: the first batch draws rows from all three
    const shardsHit = new Set(a.seen[0].rows.map((r) => Math.floor(r / 334)));
    expect(shardsHit.size).toBe(3);
  });

  it('shuffled batches are the documented permutation of (seed, epoch), gathered from the source arrays', async () => {
    const { seen } = await collect('ds/3', { batchSize: B, shuffle: true, seed: 9, workers: 2, epochs: 2 });
    for (const [epoch, batches] of epochsOf(seen)) {
      const order = Array.from(epochOrder(N, true, 9, epoch)!);
      expect(order).not.toEqual(SEQUENTIAL);
      expect(batches.flatMap((b) => b.rows)).toEqual(order);
      for (const b of batches) expect(b.xMismatch).toBeNull();
    }
  });

  it('reports the random seed it picked, which reproduces the run', async () => {
    const loader = await openLoader(c, 'ds/3', { batchSize: B, shuffle: true, workers: 0 });
    const rows: number[] = [];
    for await (const b of loader) rows.push(...Array.from(b.y.data as Int32Array));
    const again = await collect('ds/3', { batchSize: B, shuffle: true, workers: 0, seed: loader.seed });
    expect(again.seen.flatMap((s) => s.rows)).toEqual(rows);
    expect(rows).not.toEqual(SEQUENTIAL); // it did shuffle: the seed is what reproduced the order
    const next = await collect('ds/3', {
      batchSize: B,
      shuffle: true,
      workers: 0,
      seed: loader.seed > 0 ? loader.seed - 1 : 1,
    });
    expect(next.seen.flatMap((s) => s.rows)).not.toEqual(rows);
  });
});

describe('zero copy', () => {
  it('sequential batches are views of the shard tensors: same mapping, offset of the first row', async () => {
    const loc = await c.locate('ds/aligned');
    const shardIds = loc.shards.map((s) => s.id);
    const shards = (await c.getMany(shardIds)) as unknown as { members: Tensor[] }[];
    const loader = await openLoader(c, 'ds/aligned', { batchSize: B, workers: 2 });
    expect(loader.workerPids).toEqual([]); // nothing to gather, so no worker was started
    const shardRows = Math.ceil(Math.ceil(N / 3) / B) * B;
    let count = 0;
    for await (const b of loader) {
      const first = b.index * B;
      const shard = shards[Math.floor(first / shardRows)];
      const [sx, sy] = shard.members;
      const local = first % shardRows;
      expect(b.source).toBe('view');
      expect(b.x.data.buffer).toBe(sx.data.buffer);
      expect(b.x.data.byteOffset).toBe(sx.data.byteOffset + local * 6 * 4);
      expect(b.y.data.buffer).toBe(sy.data.buffer);
      expect(b.y.data.byteOffset).toBe(sy.data.byteOffset + local * 4);
      expect((b.y.data as Int32Array)[0]).toBe(first);
      count++;
    }
    expect(count).toBe(Math.ceil(N / B));
    for (const id of shardIds) await c.release(id);
  });

  it('gathered batches: x and y in one blob; a group of batches shares a blob, freed with its last batch', async () => {
    const before = (await c.status()).memoryUsed;
    const loader = await openLoader(c, 'ds/3', {
      batchSize: B,
      shuffle: true,
      seed: 3,
      workers: 1,
      prefetch: 6,
      autoRelease: false,
    });
    expect(loader.groupSize).toBe(3); // prefetch 6 = a group in the worker + a group in your hands
    const held: Batch[] = [];
    for (let i = 0; i < 6; i++) held.push((await loader.next()).value as Batch);
    const stride = Math.ceil((B * 24 + B * 4) / 64) * 64; // features, labels at the next 64 bytes, aligned
    for (const b of held) {
      expect(b.source).toBe('gathered');
      expect(b.y.data.buffer).toBe(b.x.data.buffer);
      expect(b.y.data.byteOffset - b.x.data.byteOffset).toBe(Math.ceil((B * 24) / 64) * 64);
    }
    expect(new Set(held.slice(0, 3).map((b) => b.id)).size).toBe(1);
    expect(held[3].id).not.toBe(held[0].id);
    expect(held[1].x.data.byteOffset - held[0].x.data.byteOffset).toBe(stride);
    // all six slots are held: exactly two group blobs exist, and releasing part of a group frees nothing
    expect((await c.status()).memoryUsed).toBe(before + 2 * 3 * stride);
    await held[0].release();
    await held[1].release();
    expect((await c.status()).memoryUsed).toBe(before + 2 * 3 * stride);
    await loader.close();
    expect((await c.status()).memoryUsed).toBe(before);
  });
});

describe('Arrow shards', () => {
  it('sequential batches are views of the table columns; shuffled ones cover every row', async () => {
    const loc = await c.locate('ds/arrow');
    const tables = (await c.getMany(loc.shards.map((s) => s.id))) as unknown as import('apache-arrow').Table[];
    const buffers = new Set(tables.map((t) => t.getChild('features')!.data[0].children[0].values.buffer));
    const seq = await openLoader(c, 'ds/arrow', { batchSize: 100, workers: 1 });
    let views = 0;
    for await (const b of seq) {
      if (b.source === 'view') {
        views++;
        expect(buffers.has(b.x.data.buffer as ArrayBuffer), `batch ${b.index} lies in a blob of its group`).toBe(true);
        expect(b.x.shape).toEqual([100, 2, 3]); // the sample shape recorded in the schema
      }
      expect(inspect(data, b).xMismatch).toBeNull();
    }
    expect(views).toBeGreaterThan(0);
    const { seen } = await collect('ds/arrow', { batchSize: B, shuffle: true, seed: 4, workers: 1 });
    expect(new Set(seen.flatMap((b) => b.rows)).size).toBe(N);
    expect(seen.map((b) => b.xMismatch)).toEqual(seen.map(() => null));
    expect(seen).toHaveLength(Math.ceil(N / B));
    for (const s of loc.shards) await c.release(s.id);
  });
});
