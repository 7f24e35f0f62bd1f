/**
 * The inference pool: worker threads with their own store connections and
 * sessions over one model blob, ids in and ids out.
 */
import type { Worker } from 'node:worker_threads';
import { connect, type Tensor, type TrellisClient, tensor } from 'trellis';
import { InferencePool, inferenceModel, initParams, ModelSession, putModel } from 'trellis/models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytesMismatch } from './helpers/bytes.js';
import { errCode, eventually } from './helpers/child.js';
import { startStore } from './helpers/store.js';

const SPEC = { kind: 'mlp', hidden: 16 } as const;

let env: Awaited<ReturnType<typeof startStore>>;
let client: TrellisClient;

beforeAll(async () => {
  env = await startStore();
  client = await connect({ socket: env.socket });
  await putModel(client, inferenceModel(SPEC, { weights: initParams(SPEC, 5) }).bytes, { name: 'pool/mlp' });
});
afterAll(async () => {
  await client?.close();
  await env?.stop();
});

describe('inference pool', () => {
  it('answers 1000 requests on 2 workers exactly as a serial run does', async () => {
    const N = 1000;
    const xs: string[] = [];
    for (let i = 0; i < N; i++) {
      const x = new Float32Array(2 * 784);
      for (let k = 0; k < x.length; k++) x[k] = ((i * 7919 + k * 104729) % 1000) / 1000;
      xs.push(await client.put(tensor('float32', [2, 784], x)));
    }
    const pool = await InferencePool.start({ socket: env.socket, model: 'pool/mlp', workers: 2 });
    expect(pool.workers).toBe(2);
    expect(pool.inputs.map((i) => i.name)).toEqual(['X']);
    const results = await Promise.all(xs.map((X) => pool.run({ X })));
    await pool.close();

    // The reference: the same model, one request after another, in this thread.
    await using serial = await ModelSession.fromStore(client, 'pool/mlp', { intraOpNumThreads: 1 });
    const outIds = results.flatMap((r) => [r.probs, r.pred]);
    expect(new Set(outIds).size).toBe(2 * N);
    const got = (await client.getMany(outIds)) as Tensor[];
    const inputs = (await client.getMany(xs)) as Tensor[];
    for (let i = 0; i < N; i++) {
      const want = await serial.run({ X: inputs[i] });
      const probs = got[2 * i];
      const pred = got[2 * i + 1];
      expect(probs.shape).toEqual([2, 10]);
      expect(pred.dtype).toBe('int64');
      expect(
        [bytesMismatch(probs.data, want.probs.data), bytesMismatch(pred.data, want.pred.data)],
        `input ${i}`,
      ).toEqual([null, null]);
    }
    for (const id of [...outIds, ...xs]) await client.release(id);
    await client.delete([...outIds, ...xs]);
  });

  it('brings worker-side failures back as TrellisErrors with their codes', async () => {
    await using pool = await InferencePool.start({ socket: env.socket, model: 'pool/mlp', workers: 1 });
    const ok = await client.put(tensor('float32', [1, 784]));
    const wrongDType = await client.put(tensor('float64', [1, 784]));
    const wrongShape = await client.put(tensor('float32', [1, 783]));
    const blob = await client.putBlob(new Uint8Array(16));
    await expect(pool.run({ X: 'o00000000deadbeef' })).rejects.toMatchObject({ code: 'ERR_OBJECT_NOT_FOUND' });
    await expect(pool.run({ X: wrongDType })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(pool.run({ X: wrongShape })).rejects.toMatchObject({ code: 'ERR_SIZE_MISMATCH' });
    await expect(pool.run({ X: blob })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
      message: expect.stringMatching(/not a Tensor/),
    });
    // Checked in this thread before anything is sent.
    await expect(pool.run({ Y: ok } as Record<string, string>)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(pool.run({})).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(pool.run({ X: 'not-an-id' })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    await expect(pool.run({ X: ok }, { names: { logits: 'x' } })).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    // Named outputs; the same name twice is refused by the store, and nothing is left behind.
    const first = await pool.run({ X: ok }, { names: { pred: 'pool/pred' } });
    expect(await client.getName('pool/pred')).toBe(first.pred);
    const before = await client.status();
    await expect(pool.run({ X: ok }, { names: { pred: 'pool/pred' } })).rejects.toMatchObject({
      code: 'ERR_OBJECT_EXISTS',
    });
    const after = await client.status();
    expect([after.objects, after.blobs, after.memoryUsed]).toEqual([before.objects, before.blobs, before.memoryUsed]);
    // The worker is still serving after all that.
    const again = await pool.run({ X: ok });
    expect(Object.keys(again).sort()).toEqual(['pred', 'probs']);
    await client.delete([ok, wrongDType, wrongShape, blob, first.probs, first.pred, again.probs, again.pred]);
  });

  it('fails to start with the worker’s error when the model is missing or broken', async () => {
    await expect(InferencePool.start({ socket: env.socket, model: 'pool/none', workers: 2 })).rejects.toMatchObject({
      code: 'ERR_NAME_NOT_FOUND',
    });
    const junk = await client.putBlob(new Uint8Array([8, 1, 18, 3, 1, 2, 3]));
    await expect(InferencePool.start({ socket: env.socket, model: junk, workers: 1 })).rejects.toMatchObject({
      code: 'ERR_MODEL_INVALID',
    });
    await expect(InferencePool.start({ socket: env.socket, model: 'pool/mlp', workers: 0 })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
    });
    await expect(
      InferencePool.start({ socket: `${env.dir}/nobody.sock`, model: 'pool/mlp', workers: 1 }),
    ).rejects.toMatchObject({ code: 'ERR_DISCONNECTED' });
    await client.delete(junk);
  });

  it('closes once, finishing what the workers hold and refusing the rest, and every method after it', async () => {
    const pool = await InferencePool.start({ socket: env.socket, model: 'pool/mlp', workers: 1, maxInFlight: 1 });
    const x = await client.put(tensor('float32', [1, 784]));
    const runs = Array.from({ length: 5 }, () => pool.run({ X: x }));
    const closed = pool.close();
    expect(pool.close()).toBe(closed);
    const settled = await Promise.allSettled(runs);
    await closed;
    // The first was with the worker already; the queued ones were refused.
    expect(settled[0].status).toBe('fulfilled');
    for (const r of settled.slice(1)) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'ERR_CLOSED' } });
    // Every method after close, one by one: calls fail with ERR_CLOSED (also those with bad arguments,
    // which are not looked at), closing again is a no-op, and the counters read zero.
    expect({
      run: await errCode(pool.run({ X: x })),
      runNamed: await errCode(pool.run({ X: x }, { names: { probs: 'p', pred: 'q' } })),
      runBadArgs: await errCode(pool.run(null as never)),
      close: await errCode(pool.close()),
      asyncDispose: await errCode(pool[Symbol.asyncDispose]()),
      workers: pool.workers,
      queued: pool.queued,
    }).toEqual({
      run: 'ERR_CLOSED',
      runNamed: 'ERR_CLOSED',
      runBadArgs: 'ERR_CLOSED',
      close: 'no error',
      asyncDispose: 'no error',
      workers: 0,
      queued: 0,
    });
    const out = (settled[0] as PromiseFulfilledResult<Record<string, string>>).value;
    await client.delete([x, out.probs, out.pred]);
  });

  it('fails what a dead worker held with ERR_WORKER_FAILED and carries on with the others', async () => {
    const pool = await InferencePool.start({ socket: env.socket, model: 'pool/mlp', workers: 2, maxInFlight: 1 });
    // A worker thread that ends on its own (a crash in native code, say) looks like this from the pool.
    const slots = (pool as unknown as { slots: { worker: Worker }[] }).slots;
    const x = await client.put(tensor('float32', [1, 784]));
    const runs = Array.from({ length: 6 }, () => pool.run({ X: x }));
    // Not worker.terminate(): a terminate landing inside onnxruntime's native run aborts the whole process.
    slots[0].worker.postMessage({ t: 'exit', code: 70 });
    const settled = await Promise.allSettled(runs);
    expect(pool.workers).toBe(1);
    const done = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    // Only the one request the dead worker held may fail, and only with this code.
    expect(done.length).toBeGreaterThanOrEqual(5);
    for (const r of settled) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'ERR_WORKER_FAILED' });
    slots[1].worker.postMessage({ t: 'exit', code: 70 });
    await eventually(() => pool.workers === 0, 'the second worker is gone');
    await expect(pool.run({ X: x })).rejects.toMatchObject({ code: 'ERR_WORKER_FAILED' });
    await pool.close();
    await client.delete([x, ...done.flatMap((o) => [o.probs, o.pred])]);
  });

  it('reports a store that went away as ERR_DISCONNECTED', async () => {
    const own = await startStore();
    const c = await connect({ socket: own.socket });
    await putModel(c, inferenceModel({ kind: 'softmax' }, { weights: initParams({ kind: 'softmax' }) }).bytes, {
      name: 'm',
    });
    const x = await c.put(tensor('float32', [1, 784]));
    const pool = await InferencePool.start({ socket: own.socket, model: 'm', workers: 1 });
    await c.close();
    await own.stop();
    await expect(pool.run({ X: x })).rejects.toMatchObject({ code: 'ERR_DISCONNECTED' });
    await pool.close();
  });
});
