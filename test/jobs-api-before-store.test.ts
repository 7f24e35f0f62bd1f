/**
 * `trellis api` started before any store, as a Helm install starts it (the
 * stores come up beside it): it listens at once, is live (/healthz 200) but
 * not ready (/readyz 503 ERR_STORE_UNAVAILABLE, and so is any route that
 * needs a store), and once a store registers in etcd it connects on its own
 * and a job submitted over HTTP runs to the end. All real: etcd, the API and
 * the store as `trellis` processes, an agent, redis-server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, findLogLine, type TrellisClient } from '../dist/src/index.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { freshPrefix, killAgents, outputValues, spawnAgent, sumDataset } from './helpers/jobs.js';
import { CLI, clusterStoreArgs, spawnStore, tempDir, untilReady } from './helpers/store.js';

let etcd: EtcdHandle;
let redis: RedisServerHandle;
let api: ChildProcess | undefined;
let store: Awaited<ReturnType<typeof spawnStore>> | undefined;
let client: TrellisClient | undefined;
const dir = tempDir();
const tokenFile = join(dir.dir, 'token');

beforeAll(async () => {
  etcd = await startEtcd();
  redis = await startRedisServer();
  writeFileSync(tokenFile, `${randomUUID()}${randomUUID()}`, { mode: 0o600 });
});
afterAll(async () => {
  await killAgents();
  if (api && api.exitCode === null) {
    await new Promise((r) => {
      api!.once('exit', r);
      api!.kill('SIGTERM');
    });
  }
  await client?.close();
  await store?.stop();
  await redis?.stop();
  await etcd?.stop();
  dir.cleanup();
});

const get = async (url: string): Promise<[number, unknown]> => {
  const r = await fetch(url);
  return [r.status, await r.json()];
};

describe('the API started before any store', () => {
  it('serves not-ready until a store registers, then connects and runs a job', async () => {
    const metaPrefix = `/trellis-test/${randomUUID()}`;
    const prefix = freshPrefix();
    api = spawn(
      process.execPath,
      [
        CLI,
        'api',
        '--port',
        '0',
        '--redis',
        redis.url,
        '--meta',
        etcd.url,
        '--meta-prefix',
        metaPrefix,
        '--store-token-file',
        tokenFile,
        '--prefix',
        prefix,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TRELLIS_TOKEN: '' } },
    );
    const out = await untilReady(api, 'api', 'listening');
    const url = String(findLogLine(out(), 'listening')!.url);

    const missing = {
      code: 'ERR_STORE_UNAVAILABLE',
      message: `no store reachable: no store with an RPC endpoint in ${etcd.url}`,
    };
    expect(await get(`${url}/healthz`)).toEqual([200, { status: 'ok' }]);
    expect(await get(`${url}/readyz`)).toEqual([503, missing]);
    expect(await get(`${url}/v1/datasets`)).toEqual([503, missing]);
    // It said so when it started, and kept running.
    expect(findLogLine(out(), `${missing.message}; not ready until a store is there`)).toMatchObject({
      code: missing.code,
    });

    store = await spawnStore(
      clusterStoreArgs({ name: 'node-a', size: '128M', etcdUrl: etcd.url, metaPrefix, host: '127.0.0.1', tokenFile }),
    );
    await eventually(async () => (await get(`${url}/readyz`))[0] === 200, 'the API ready');
    expect(await get(`${url}/readyz`)).toEqual([200, { status: 'ready' }]);

    client = await connect({ socket: store.socket });
    const { sums } = await sumDataset(client, `${prefix}/ds`, 2);
    await spawnAgent(store.socket, redis.url, prefix);
    const submitted = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'after-store', kind: 'map', dataset: `${prefix}/ds`, handler: 'sum-xy' }),
    });
    expect(submitted.status).toBe(201);
    const state = async () => ((await get(`${url}/v1/jobs/after-store`))[1] as { state: string }).state;
    await eventually(async () => ['succeeded', 'failed', 'cancelled'].includes(await state()), 'the job ends', 60_000);
    const [, job] = (await get(`${url}/v1/jobs/after-store`)) as [number, { state: string; result: unknown }];
    expect([job.state, job.result]).toEqual(['succeeded', { output: 'after-store/output' }]);
    expect(await outputValues(client, 'after-store/output')).toEqual(sums);
  }, 120_000);
});
