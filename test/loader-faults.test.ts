/**
 * The loader's failure paths and shutdown, with real worker processes: a
 * worker killed with SIGKILL, a worker's own Trellis error crossing over,
 * leaving a loop early, the loader's process dying, backpressure, bad
 * arguments. After each, no worker process may be left and the store's
 * memory must be back to the shards alone. Every failure asserts its code.
 */

import { type Batch, connect, openLoader, type TrellisClient } from 'trellis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { alive, putTestDataset, testData } from './helpers/loader.js';
import { startStore } from './helpers/store.js';

let env: Awaited<ReturnType<typeof startStore>>;
let c: TrellisClient;
/** memoryUsed with the dataset stored and nothing else. */
let shardBytes: number;
const data = testData(1000);

async function memoryBackToShards(): Promise<void> {
  await eventually(async () => (await c.status()).memoryUsed === shardBytes, 'memory back to the shards alone');
}

beforeEach(async () => {
  env = await startStore({ size: 32 * 1024 * 1024 });
  c = await connect({ socket: env.socket });
  await putTestDataset(c, 'ds', data, { shards: 2 });
  shardBytes = (await c.status()).memoryUsed;
});
afterEach(async () => {
  await killChildren();
  await c?.close();
  await env?.stop();
});

describe('worker failure', () => {
  it('a worker killed with SIGKILL fails the loop with ERR_WORKER_FAILED; nothing is left behind', async () => {
    const loader = await openLoader(c, 'ds', { batchSize: 8, shuffle: true, seed: 1, workers: 2, prefetch: 3 });
    const pids = loader.workerPids;
    expect(pids.filter((p) => !alive(p))).toEqual([]);
    let batches = 0;
    const code = await errCode(async () => {
      for await (const _ of loader) {
        if (++batches === 1) process.kill(pids[0], 'SIGKILL');
      }
    });
    expect(code).toBe('ERR_WORKER_FAILED');
    expect(batches).toBeLessThan(125); // it stopped before the end of the epoch
    expect(pids.filter(alive)).toEqual([]); // the other worker was stopped before the error surfaced
    await memoryBackToShards();
    expect(c.heldCount).toBe(0);
    // the loader is closed: iteration is over, close is idempotent
    expect(await loader.next()).toEqual({ done: true, value: undefined });
    await loader.close();
  });

  it('the message names the worker and how it died', async () => {
    const loader = await openLoader(c, 'ds', { batchSize: 8, shuffle: true, seed: 1, workers: 1 });
    const [pid] = loader.workerPids;
    process.kill(pid, 'SIGKILL');
    let e: { code?: string; message: string } | null = null;
    try {
      for await (const _ of loader);
    } catch (x) {
      e = x as Error;
    }
    if (!e) throw new Error('the loop ended without an error');
    expect(e.code).toBe('ERR_WORKER_FAILED');
    expect(e.message).toContain(`pid ${pid}`);
    expect(e.message).toContain('SIGKILL');
    expect(alive(pid)).toBe(false);
  });

  it("a worker's own Trellis error arrives with its code (ERR_OUT_OF_MEMORY), also when gathering in-process", async () => {
    // A 1 MiB store holding a 624 KB dataset has no room for a batch of every row.
    const small = await startStore({ size: 1024 * 1024 });
    try {
      const sc = await connect({ socket: small.socket });
      const big = testData(2400, [64]);
      await putTestDataset(sc, 'big', big, { shards: 2 });
      const base = (await sc.status()).memoryUsed;
      for (const workers of [1, 0]) {
        const loader = await openLoader(sc, 'big', { batchSize: 2400, shuffle: true, seed: 1, workers });
        const pids = loader.workerPids;
        expect(await errCode(loader.next())).toBe('ERR_OUT_OF_MEMORY');
        expect(pids.filter(alive)).toEqual([]);
        await eventually(async () => (await sc.status()).memoryUsed === base, 'memory back');
      }
      await sc.close();
    } finally {
      await small.stop();
    }
  });
});

describe('shutdown', () => {
  it('leaving a for-await loop early stops the workers and frees every batch', async () => {
    const loader = await openLoader(c, 'ds', { batchSize: 16, shuffle: true, seed: 2, workers: 2, epochs: 3 });
    const pids = loader.workerPids;
    let n = 0;
    for await (const _ of loader) if (++n === 2) break;
    expect(pids.filter(alive)).toEqual([]);
    await memoryBackToShards();
    expect(c.heldCount).toBe(0);
    await loader.close(); // twice is fine
  });

  it('close() while batches are held and prefetched frees them all; views are released with it', async () => {
    const loader = await openLoader(c, 'ds', {
      batchSize: 16,
      shuffle: true,
      seed: 2,
      workers: 1,
      autoRelease: false,
      prefetch: 4,
    });
    const held: Batch[] = [];
    for (let i = 0; i < 2; i++) held.push((await loader.next()).value as Batch);
    await loader.close();
    expect(loader.workerPids.filter(alive)).toEqual([]);
    await memoryBackToShards();
    await held[0].release(); // after close: nothing to do, no error
    expect(await loader.next()).toEqual({ done: true, value: undefined });
  });

  it('every method after close(): iteration is over, closing again is a no-op, nothing is held', async () => {
    const loader = await openLoader(c, 'ds', { batchSize: 16, shuffle: true, seed: 2, workers: 1, autoRelease: false });
    const batch = (await loader.next()).value as Batch;
    await loader.close();
    // The documented contract (dataset-loader.ts): next() is { done: true } after close, not an error.
    const done = { done: true, value: undefined };
    expect({
      next: await loader.next(),
      return: await loader.return(),
      close: await errCode(loader.close()),
      asyncDispose: await errCode(loader[Symbol.asyncDispose]()),
      batchRelease: await errCode(batch.release()),
      // (workerPids still names the workers it ran, so a caller can check they are gone)
      liveWorkers: loader.workerPids.filter(alive),
    }).toEqual({
      next: done,
      return: done,
      close: 'no error',
      asyncDispose: 'no error',
      batchRelease: 'no error',
      liveWorkers: [],
    });
    // A loop started after close ends at once.
    const after: Batch[] = [];
    for await (const b of loader) after.push(b);
    expect(after).toEqual([]);
    await memoryBackToShards();
    expect(c.heldCount).toBe(0);
  });

  it('the end of the last epoch closes the loader (autoRelease) and stops the workers', async () => {
    const loader = await openLoader(c, 'ds', { batchSize: 100, shuffle: true, seed: 2, workers: 2 });
    let n = 0;
    for await (const _ of loader) n++;
    expect(n).toBe(10);
    expect(loader.workerPids.filter(alive)).toEqual([]);
    await memoryBackToShards();
    expect(c.heldCount).toBe(0);
  });

  it("the loader's process dying takes its workers with it", async () => {
    const child = startChild(
      `const c = await connect({ socket: process.env.SOCK });
       const loader = await trellis.openLoader(c, 'ds', { batchSize: 8, shuffle: true, seed: 1, workers: 2 });
       const it = loader[Symbol.asyncIterator]();
       await it.next();
       send({ pids: loader.workerPids });
       await command();`,
      { SOCK: env.socket },
    );
    const { pids } = (await child.next()) as { pids: number[] };
    expect(pids).toHaveLength(2);
    expect(pids.filter((p) => !alive(p))).toEqual([]);
    child.proc.kill('SIGKILL');
    await child.exited;
    await eventually(() => !pids.some(alive), 'workers exit after their loader died');
    await memoryBackToShards();
  });
});

describe('backpressure', () => {
  for (const workers of [0, 2]) {
    it(`at most \`prefetch\` batches exist; holding them all and asking for more is ERR_BAD_REQUEST (${workers} workers)`, async () => {
      const loader = await openLoader(c, 'ds', {
        batchSize: 32,
        shuffle: true,
        seed: 3,
        workers,
        prefetch: 3,
        autoRelease: false,
      });
      const blob = Math.ceil((32 * 24 + 32 * 4) / 64) * 64;
      const held: Batch[] = [];
      for (let i = 0; i < 3; i++) held.push((await loader.next()).value as Batch);
      // With workers: 0 the loader's creates travel on this connection, so the store answers this status
      // after any gather the loader wrongly started ahead: no wait needed. With workers the gathers go over
      // the workers' own connections: this is a snapshot, the in-process case is the exact one.
      expect((await c.status()).memoryUsed).toBe(shardBytes + 3 * blob);
      expect(await errCode(loader.next())).toBe('ERR_BAD_REQUEST');
      await held[0].release();
      await held[0].release(); // twice is fine
      const next = (await loader.next()).value as Batch;
      expect(next.index).toBe(3);
      expect((await c.status()).memoryUsed).toBeLessThanOrEqual(shardBytes + 3 * blob);
      await loader.close();
      await memoryBackToShards();
    });
  }
});

describe('bad arguments and datasets', () => {
  it('refuses bad options with ERR_BAD_REQUEST before starting anything', async () => {
    for (const opts of [
      { batchSize: 0 },
      { batchSize: 1.5 },
      { batchSize: 8, workers: -1 },
      { batchSize: 8, prefetch: 0 },
      { batchSize: 8, epochs: 0 },
      { batchSize: 8, seed: -1 },
      { batchSize: 8, shuffle: 'yes' },
    ]) {
      expect(await errCode(openLoader(c, 'ds', opts as never))).toBe('ERR_BAD_REQUEST');
    }
    expect(await errCode(openLoader(c, '', { batchSize: 8 }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(openLoader({} as never, 'ds', { batchSize: 8 }))).toBe('ERR_BAD_REQUEST');
    // a client over RPC has no shared memory to hand out
    const remoteLike = { createBlob: () => {}, status: () => {} };
    expect(await errCode(openLoader(remoteLike as never, 'ds', { batchSize: 8 }))).toBe('ERR_UNSUPPORTED');
    expect((await c.status()).memoryUsed).toBe(shardBytes);
    expect(c.heldCount).toBe(0);
  });

  it('an unknown dataset is ERR_NAME_NOT_FOUND; a shard of the wrong kind or shape is refused', async () => {
    expect(await errCode(openLoader(c, 'nope', { batchSize: 8 }))).toBe('ERR_NAME_NOT_FOUND');
    const t = await c.put(new Float32Array(10));
    await c.createDataset('not-shards', [t]);
    expect(await errCode(openLoader(c, 'not-shards', { batchSize: 8 }))).toBe('ERR_BAD_REQUEST');
    const other = testData(10, [5]);
    const a = await putTestDataset(c, 'other', other);
    const mixed = await c.locate('ds');
    await c.createDataset('mixed', [...mixed.shards.map((s) => s.id), ...a.shards]);
    expect(await errCode(openLoader(c, 'mixed', { batchSize: 8 }))).toBe('ERR_SIZE_MISMATCH');
    expect(c.heldCount).toBe(0);
  });

  it('opens by socket path and closes its own connection', async () => {
    const loader = await openLoader(env.socket, 'ds', { batchSize: 500, workers: 0 });
    let n = 0;
    for await (const _ of loader) n++;
    expect(n).toBe(2);
    await eventually(async () => (await c.status()).connections === 1, 'the loader connection closed');
  });
});
