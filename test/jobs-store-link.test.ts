/**
 * The job service outlives its store: after the store under the API restarts
 * (a rolling update, a crash), calls reach the new one instead of answering
 * ERR_DISCONNECTED until the API is restarted. A real store on a real socket,
 * stopped and started again on the same path; a real redis-server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../dist/src/index.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobService } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { StoreServer } from '../dist/src/store/store-server.js';
import { errCode } from './helpers/child.js';
import { freshPrefix, quiet } from './helpers/jobs.js';
import { tempDir } from './helpers/store.js';

const SIZE = 64 * 1024 * 1024;
let redis: RedisServerHandle;
let service: JobService | undefined;
const dir = tempDir();
const socket = `${dir.dir}/store.sock`;

beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await service?.close();
  await redis?.stop();
  dir.cleanup();
});

/** A dataset of one shard, so `datasets()` has something to read from the store. */
async function oneDataset(name: string): Promise<void> {
  await using c = await connect({ socket });
  const shard = await c.put(new Float32Array([1, 2, 3]));
  await c.createDataset(name, [shard]);
}

describe('the job service over a store that restarts', () => {
  it('reads through the new store after a restart, and fails only while no store is there', async () => {
    let store = await StoreServer.start({ socket, size: SIZE });
    await oneDataset('before');
    service = await startJobService({ redis: redis.url, socket, logger: quiet, prefix: freshPrefix() });
    expect((await service.datasets()).map((d) => d.name)).toEqual(['before']);

    await store.close();
    // No store at all: the read fails (it is tried once more on a new connection, which cannot open).
    expect(await errCode(service.datasets())).toBe('ERR_STORE_UNAVAILABLE');
    expect(await errCode(service.ready())).toBe('ERR_STORE_UNAVAILABLE');

    store = await StoreServer.start({ socket, size: SIZE });
    await oneDataset('after');
    // The next call opens a new connection: the new store's datasets, no restart of the service.
    expect((await service.datasets()).map((d) => d.name)).toEqual(['after']);
    await service.ready();
    await store.close();
    await service.close();
    service = undefined;
  });
});
