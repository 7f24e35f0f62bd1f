/**
 * The map kind, called as the agent calls it: a real store, a real client,
 * a real task host process per task, fixture handlers from
 * test/fixtures/handlers. Results are checked against the same sum computed
 * here; failures by their codes; and after every failure this process still
 * runs tasks.
 */
import * as arrow from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Tensor, type TrellisClient, TrellisError, tensor } from '../dist/src/index.js';
import type { MapJobSpec } from '../dist/src/jobs/job-types.js';
import {
  CANCEL_GRACE_MS,
  closeSpareHosts,
  keepSpareHosts,
  runners,
  spareHostPids,
  warmHostPids,
} from '../dist/src/jobs/kinds/index.js';
import type { TaskPayload } from '../dist/src/jobs/task-types.js';
import { writeDataset } from '../dist/src/loaders/shard-writer.js';
import { eventually } from './helpers/child.js';
import { startStore } from './helpers/store.js';
import { failure, HANDLERS, processRunning, taskContext } from './helpers/task-context.js';

let env: Awaited<ReturnType<typeof startStore>>;
let client: TrellisClient;
let shards: string[];
const ROWS = 1000;
const features = new Float32Array(ROWS * 4);
const labels = new Uint8Array(ROWS);

beforeAll(async () => {
  env = await startStore();
  client = await connect({ socket: env.socket });
  for (let i = 0; i < features.length; i++) features[i] = ((i * 37) % 101) / 8;
  for (let i = 0; i < ROWS; i++) labels[i] = i % 10;
  ({ shards } = await writeDataset(client, 'kinds/map', {
    features: tensor('float32', [ROWS, 4], features),
    labels,
    shardRows: 400,
  }));
});
afterAll(async () => {
  await closeSpareHosts();
  await client?.close();
  await env?.stop();
});

function payload(jobId: string, handler: string, index = 0, args?: unknown): TaskPayload {
  const spec: MapJobSpec = { kind: 'map', dataset: 'kinds/map', handler, ...(args === undefined ? {} : { args }) };
  return { jobId, index, spec, shards: [shards[index]] };
}

/** The sum handler's answer, computed here: features of rows [400 i, 400 i + 400). */
function expectedSum(index: number, scale: number): number[] {
  const start = index * 400;
  const end = Math.min(ROWS, start + 400);
  let sum = 0;
  for (const v of features.subarray(start * 4, end * 4)) sum += v;
  return [sum * scale, end - start];
}

async function runSum(jobId: string, index: number): Promise<void> {
  const rec = taskContext(client, env.socket, [shards[index]]);
  const out = await runners.map(payload(jobId, 'sum', index, { scale: 2 }), rec.ctx);
  const t = (await client.get(out.outputId!)) as Tensor;
  expect({ dtype: t.dtype, shape: t.shape, data: Array.from(t.data as Float64Array) }).toEqual({
    dtype: 'float64',
    shape: [2],
    data: expectedSum(index, 2),
  });
  await client.release(out.outputId!);
}

describe('map runner', () => {
  it('runs a handler per shard in a task host and stores its value, named and persisted, on this node', async () => {
    const outputs: string[] = [];
    for (let i = 0; i < shards.length; i++) {
      const rec = taskContext(client, env.socket, [shards[i]]);
      const out = await runners.map(payload('map-sum', 'sum', i, { scale: 2 }), rec.ctx);
      expect(Object.keys(out)).toEqual(['outputId']);
      expect(rec.logs).toEqual([`summed ${expectedSum(i, 1)[1]} rows`]);
      outputs.push(out.outputId!);
    }
    const values = (await client.getMany(outputs)) as Tensor[];
    expect(values.map((t) => Array.from(t.data as Float64Array))).toEqual([0, 1, 2].map((i) => expectedSum(i, 2)));
    expect(await Promise.all([0, 1, 2].map((i) => client.getName(`map-sum/output/${i}`)))).toEqual(outputs);
    // persisted: a dataset of the outputs can be made, as the engine does
    const loc = await client.locate(await client.createDataset('map-sum/output', outputs));
    expect(loc.shards.map((s) => [s.id, s.instanceId])).toEqual(outputs.map((id) => [id, client.instanceId]));
    for (const id of outputs) await client.release(id);
  });

  it('a retry on the same node returns the earlier attempt’s output without running the handler', async () => {
    const first = await runners.map(payload('map-retry', 'sum', 1), taskContext(client, env.socket, [shards[1]]).ctx);
    const rec = taskContext(client, env.socket, [shards[1]]);
    const again = await runners.map(payload('map-retry', 'sum', 1), rec.ctx);
    expect(again).toEqual(first);
    expect(rec.logs).toEqual([`output ${first.outputId} of an earlier attempt is on this node; not running sum again`]);
  });

  it('stores a .js handler’s TypedArray view of the shard as a copy of it', async () => {
    const out = await runners.map(payload('map-js', 'plain-js'), taskContext(client, env.socket, [shards[0]]).ctx);
    const t = (await client.get(out.outputId!)) as Tensor;
    expect([t.dtype, t.shape, Array.from(t.data as Uint8Array)]).toEqual([
      'uint8',
      [400],
      Array.from(labels.subarray(0, 400)),
    ]);
    await client.release(out.outputId!);
  });

  it('stores an arrow.Table a handler returns as a table', async () => {
    const out = await runners.map(payload('map-table', 'table', 2), taskContext(client, env.socket, [shards[2]]).ctx);
    const t = await client.get(out.outputId!);
    expect(t).toBeInstanceOf(arrow.Table);
    const labelSum = Array.from(labels.subarray(800)).reduce((a, v) => a + v, 0);
    expect((t as arrow.Table).toArray().map((r) => r.toJSON())).toEqual([{ rows: 200, labelSum }]);
    await client.release(out.outputId!);
  });

  it('fails a task whose handler throws a TrellisError with that error’s code and message', async () => {
    const rec = taskContext(client, env.socket, [shards[0]]);
    expect(await failure(runners.map(payload('map-code', 'fail-code'), rec.ctx))).toEqual({
      code: 'ERR_SIZE_MISMATCH',
      message: `shard ${shards[0]} does not add up`,
    });
    await runSum('after-code', 0);
  });

  it('fails a task whose handler throws a plain Error with ERR_HANDLER_FAILED and the error', async () => {
    const f = await failure(
      runners.map(payload('map-plain', 'fail-plain'), taskContext(client, env.socket, [shards[0]]).ctx),
    );
    expect({ code: f.code, first: f.message.split('\n')[0] }).toEqual({
      code: 'ERR_HANDLER_FAILED',
      first: 'handler fail-plain: Error: boom',
    });
    expect(f.message).toMatch(/fail-plain\.mjs/); // the stack says where
    await runSum('after-plain', 0);
  });

  it('fails a handler that returns something unstorable, or is unknown, or is not a plain name', async () => {
    const ctx = () => taskContext(client, env.socket, [shards[0]]).ctx;
    expect(await failure(runners.map(payload('map-bad', 'bad-return'), ctx()))).toEqual({
      code: 'ERR_HANDLER_FAILED',
      message: 'handler bad-return returned number; it must return a Tensor, a TypedArray or an arrow.Table',
    });
    expect((await failure(runners.map(payload('map-none', 'nope'), ctx()))).code).toBe('ERR_HANDLER_NOT_FOUND');
    expect((await failure(runners.map(payload('map-path', '../sum'), ctx()))).code).toBe('ERR_BAD_REQUEST');
  });

  it('fails a handler module that does not load or has no default export with ERR_HANDLER_FAILED', async () => {
    const ctx = () => taskContext(client, env.socket, [shards[0]]).ctx;
    const broken = await failure(runners.map(payload('map-broken', 'broken'), ctx()));
    expect({ code: broken.code, first: broken.message.split(':').slice(0, 2).join(':') }).toEqual({
      code: 'ERR_HANDLER_FAILED',
      first: `handler broken (${HANDLERS}/broken.mjs) could not be loaded: Error [ERR_MODULE_NOT_FOUND]`,
    });
    expect(await failure(runners.map(payload('map-nodefault', 'no-default'), ctx()))).toEqual({
      code: 'ERR_HANDLER_FAILED',
      message: `handler no-default (${HANDLERS}/no-default.mjs) has no default export function`,
    });
  });

  it('a handler that calls process.exit(3) fails only its task, with ERR_WORKER_FAILED', async () => {
    const f = await failure(runners.map(payload('map-exit', 'exit'), taskContext(client, env.socket, [shards[0]]).ctx));
    expect(f.code).toBe('ERR_WORKER_FAILED');
    expect(f.message).toMatch(/^the task host \(pid \d+\) of map task map-exit#0 exited with code 3 before answering$/);
    await runSum('after-exit', 0);
  });

  it('a handler that writes into its read-only input dies by SIGSEGV, failing only its task', async () => {
    const f = await failure(
      runners.map(payload('map-segv', 'write-view'), taskContext(client, env.socket, [shards[0]]).ctx),
    );
    expect(f.code).toBe('ERR_WORKER_FAILED');
    expect(f.message).toMatch(
      /^the task host \(pid \d+\) of map task map-segv#0 was killed by SIGSEGV before answering/,
    );
    await runSum('after-segv', 0);
  });

  it('cancel: a handler that honours its signal stops by itself, and the task rejects with ERR_CANCELLED', async () => {
    const rec = taskContext(client, env.socket, [shards[0]]);
    const task = runners.map(payload('map-hang', 'hang'), rec.ctx);
    await rec.waitFor((e) => e.log === 'waiting for abort');
    rec.abort.abort();
    expect(await failure(task)).toEqual({
      code: 'ERR_CANCELLED',
      message: 'the task was cancelled; its task host stopped',
    });
    await runSum('after-hang', 0);
  });

  it('cancel with a TrellisError reason (a job timeout) rejects with that reason’s code', async () => {
    const rec = taskContext(client, env.socket, [shards[0]]);
    const task = runners.map(payload('map-timeout', 'hang'), rec.ctx);
    await rec.waitFor((e) => e.log === 'waiting for abort');
    rec.abort.abort(new TrellisError('ERR_TIMEOUT', 'the job ran past its timeoutMs'));
    expect(await failure(task)).toEqual({
      code: 'ERR_TIMEOUT',
      message: 'the job ran past its timeoutMs; its task host stopped',
    });
  });

  it('cancel: a handler that ignores abort and spins is killed after the grace period', async () => {
    const rec = taskContext(client, env.socket, [shards[0]]);
    const task = runners.map(payload('map-spin', 'spin'), rec.ctx);
    await rec.waitFor((e) => e.log?.startsWith('spinning in ') === true);
    rec.abort.abort();
    expect(await failure(task)).toEqual({
      code: 'ERR_CANCELLED',
      message: `the task was cancelled; its task host did not stop within ${CANCEL_GRACE_MS} ms and was killed`,
    });
    await runSum('after-spin', 0);
  });

  it('a task cancelled before it starts starts no host', async () => {
    const rec = taskContext(client, env.socket, [shards[0]]);
    rec.abort.abort();
    expect(await failure(runners.map(payload('map-early', 'sum'), rec.ctx))).toEqual({
      code: 'ERR_CANCELLED',
      message: 'the task was cancelled; it had not started',
    });
    expect(rec.logs).toEqual([]);
  });

  it('refuses a payload of another kind or without a local id per shard', async () => {
    const rec = taskContext(client, env.socket, []);
    expect((await failure(runners.map(payload('map-x', 'sum'), rec.ctx))).code).toBe('ERR_BAD_REQUEST');
    const inferPayload: TaskPayload = { ...payload('map-y', 'sum'), spec: { kind: 'infer', dataset: 'd', model: 'm' } };
    expect((await failure(runners.map(inferPayload, taskContext(client, env.socket, [shards[0]]).ctx))).code).toBe(
      'ERR_BAD_REQUEST',
    );
  });
});

describe('spare task hosts', () => {
  it('a task runs in a spare forked before it came, which is replaced; close ends the spares', async () => {
    keepSpareHosts(env.socket, 1);
    const [spare] = spareHostPids(env.socket);
    expect(processRunning(spare)).toBe(true);
    const out = await runners.map(payload('map-spare', 'pid'), taskContext(client, env.socket, [shards[0]]).ctx);
    const t = (await client.get(out.outputId!)) as Tensor;
    expect(Array.from(t.data as Int32Array)).toEqual([spare]);
    await client.release(out.outputId!);
    const next = spareHostPids(env.socket);
    expect(next).toHaveLength(1);
    expect(next).not.toContain(spare);
    await closeSpareHosts();
    expect(spareHostPids(env.socket)).toEqual([]);
    expect(processRunning(next[0])).toBe(false);
    expect(() => keepSpareHosts(env.socket, -1)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
  });
});

describe('warm task hosts', () => {
  async function pidOf(jobId: string, index: number): Promise<number> {
    const out = await runners.map(payload(jobId, 'pid', index), taskContext(client, env.socket, [shards[index]]).ctx);
    const t = (await client.get(out.outputId!)) as Tensor;
    const [pid] = Array.from(t.data as Int32Array);
    await client.release(out.outputId!);
    return pid;
  }

  it('the next task of the same job runs in the host the last one left; another job’s does not', async () => {
    const a = await pidOf('warm-1', 0);
    expect(warmHostPids(env.socket, 'warm-1')).toEqual([a]);
    expect(await pidOf('warm-1', 1)).toBe(a);
    expect(await pidOf('warm-1', 2)).toBe(a);
    const other = await pidOf('warm-2', 0);
    expect(other).not.toBe(a);
    expect(warmHostPids(env.socket, 'warm-1')).toEqual([a]);
    // unused, it exits after its idle time
    await eventually(() => !processRunning(a), `warm host ${a} exiting when idle`);
    expect(warmHostPids(env.socket, 'warm-1')).toEqual([]);
  });

  it('tasks of one job running at once each get a host, and both wait for the job’s next tasks', async () => {
    const pids = await Promise.all([pidOf('warm-4', 0), pidOf('warm-4', 1)]);
    expect(new Set(pids).size).toBe(2);
    expect(warmHostPids(env.socket, 'warm-4').sort()).toEqual([...pids].sort());
    const next = await pidOf('warm-4', 2);
    expect(pids).toContain(next);
    expect(warmHostPids(env.socket, 'warm-4').sort()).toEqual([...pids].sort());
  });

  it('a host whose task failed is not used again', async () => {
    const a = await pidOf('warm-3', 0);
    const f = await failure(
      runners.map(payload('warm-3', 'fail-code', 1), taskContext(client, env.socket, [shards[1]]).ctx),
    );
    expect(f.code).toBe('ERR_SIZE_MISMATCH');
    expect(processRunning(a)).toBe(false);
    expect(warmHostPids(env.socket, 'warm-3')).toEqual([]);
    expect(await pidOf('warm-3', 2)).not.toBe(a);
  });
});
