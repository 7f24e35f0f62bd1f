/**
 * The store daemon's /metrics and /healthz (`trellis store --metrics-port`):
 * the text passes `promtool check metrics`, and the figures move by exactly
 * what real operations did — puts and gets with their bytes over IPC and RPC,
 * request latencies by message type, spills and restores, a migration
 * between two stores through etcd.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'trellis';
import { freePort } from 'trellis/jobs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { errCode } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { families, promtool, sample, scrape } from './helpers/metrics.js';
import { clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

const KiB = 1024;
const TOKEN = `${randomUUID()}${randomUUID()}`;

describe('store metrics', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  let tokens: ReturnType<typeof tempDir>;
  let tokenFile = '';
  beforeAll(() => {
    tokens = tempDir();
    tokenFile = join(tokens.dir, 'token');
    writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  });
  afterAll(() => tokens.cleanup());
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });

  async function store(args: string[]) {
    const port = await freePort();
    const s = await spawnStore([...args, '--metrics-port', String(port)]);
    cleanups.push(s.stop);
    expect(s.ready.metrics).toBe(`http://127.0.0.1:${port}`);
    return { ...s, url: s.ready.metrics as string };
  }

  it('puts and gets over IPC and RPC move the counters by exactly their objects and bytes; the text passes promtool', async () => {
    const s = await store(['--size', '64M', '--rpc-port', '0', '--token-file', tokenFile]);
    const before = await scrape(s.url);
    expect(await promtool(families(before))).toEqual({ code: 0, output: '' });
    const ipc = { transport: 'ipc', kind: 'Tensor' };
    const rpc = { transport: 'rpc', kind: 'Tensor' };
    expect(sample(before, 'trellis_store_puts_total', ipc)).toBeUndefined(); // no series before the first put

    const c = await connect({ socket: s.socket });
    cleanups.push(() => c.close());
    const small = await c.put(new Uint8Array(100 * KiB)); // inline: one put request
    const large = await c.put(new Uint8Array(1024 * KiB)); // create, then seal
    await c.get(small);
    await c.get(large);
    const r = await connect({ rpc: s.ready.rpc as string, token: TOKEN });
    cleanups.push(() => r.close());
    const remote = await r.put(new Uint8Array(300 * KiB));
    await r.get(remote);
    expect(await errCode(connect({ rpc: s.ready.rpc as string, token: `${TOKEN}-wrong` }))).toBe('ERR_UNAUTHORIZED');

    const text = await scrape(s.url);
    const status = await c.status();
    const read = (name: string, labels: Record<string, string> = {}) => sample(text, name, labels);
    expect({
      ipcPuts: read('trellis_store_puts_total', ipc),
      ipcPutBytes: read('trellis_store_put_bytes_total', ipc),
      ipcGets: read('trellis_store_gets_total', ipc),
      ipcGetBytes: read('trellis_store_get_bytes_total', ipc),
      rpcPuts: read('trellis_store_puts_total', rpc),
      rpcPutBytes: read('trellis_store_put_bytes_total', rpc),
      rpcGets: read('trellis_store_gets_total', rpc),
      rpcGetBytes: read('trellis_store_get_bytes_total', rpc),
      received: read('trellis_store_rpc_received_bytes_total'),
      sent: read('trellis_store_rpc_sent_bytes_total'),
      authFailures: read('trellis_store_rpc_auth_failures_total'),
      objects: read('trellis_store_objects'),
      used: read('trellis_store_memory_used_bytes'),
      limit: read('trellis_store_memory_limit_bytes'),
      ipcConnections: read('trellis_store_connections', { transport: 'ipc' }),
      rpcConnections: read('trellis_store_connections', { transport: 'rpc' }),
      putsTimed: read('trellis_store_request_duration_seconds_count', { type: 'put', transport: 'ipc' }),
      sealsTimed: read('trellis_store_request_duration_seconds_count', { type: 'seal', transport: 'ipc' }),
      getsTimed: read('trellis_store_request_duration_seconds_count', { type: 'get', transport: 'ipc' }),
      rpcPutsTimed: read('trellis_store_request_duration_seconds_count', { type: 'put', transport: 'rpc' }),
      rpcGetsTimed: read('trellis_store_request_duration_seconds_count', { type: 'get', transport: 'rpc' }),
    }).toEqual({
      ipcPuts: 2,
      ipcPutBytes: 1124 * KiB,
      ipcGets: 2,
      ipcGetBytes: 1124 * KiB,
      rpcPuts: 1,
      rpcPutBytes: 300 * KiB,
      rpcGets: 1,
      rpcGetBytes: 300 * KiB,
      received: 300 * KiB,
      sent: 300 * KiB,
      authFailures: 1,
      objects: 3,
      used: status.memoryUsed,
      limit: 64 * 1024 * KiB,
      ipcConnections: status.connections,
      rpcConnections: 1,
      putsTimed: 1,
      sealsTimed: 1,
      getsTimed: 2,
      rpcPutsTimed: 1,
      rpcGetsTimed: 1,
    });
    expect(status.memoryUsed).toBeGreaterThanOrEqual(1424 * KiB);
    expect(await promtool(families(text))).toEqual({ code: 0, output: '' });
  });

  it('objects and blobs follow puts, a composite, a deep delete of a held object and its release', async () => {
    const s = await store(['--size', '16M']);
    const c = await connect({ socket: s.socket });
    cleanups.push(() => c.close());
    const counts = async () => {
      const text = await scrape(s.url);
      const st = await c.status();
      return {
        objects: sample(text, 'trellis_store_objects'),
        blobs: sample(text, 'trellis_store_blobs'),
        status: [st.objects, st.blobs],
      };
    };
    const a = await c.put(new Uint8Array(10));
    const b = await c.put(new Float32Array(10));
    expect(await counts()).toEqual({ objects: 2, blobs: 2, status: [2, 2] });
    const pair = await c.putObject({ typename: 'Pair', meta: {}, members: [a, b] });
    expect(await counts()).toEqual({ objects: 3, blobs: 2, status: [3, 2] });
    await c.get(pair); // held: a deep delete hides everything at once, the blobs go on release
    await c.delete(pair);
    expect(await counts()).toEqual({ objects: 0, blobs: 2, status: [0, 2] });
    await c.release(pair);
    await c.status(); // the release is not answered; a request after it is
    expect(await counts()).toEqual({ objects: 0, blobs: 0, status: [0, 0] });
  });

  it('serves /healthz, and answers other paths with ERR_ROUTE_NOT_FOUND', async () => {
    const s = await store(['--size', '16M']);
    const health = await fetch(`${s.url}/healthz`);
    expect({ status: health.status, body: await health.json() }).toEqual({ status: 200, body: { status: 'ok' } });
    const other = await fetch(`${s.url}/nothing?x=1`);
    expect({ status: other.status, body: await other.json() }).toEqual({
      status: 404,
      body: { code: 'ERR_ROUTE_NOT_FOUND', message: 'no route GET /nothing' },
    });
  });

  it('counts spills and restores as the arena runs out', async () => {
    const spill = tempDir();
    cleanups.push(async () => spill.cleanup());
    const s = await store(['--size', '1M', '--segment-size', '1M', '--spill-dir', join(spill.dir, 'spill')]);
    const c = await connect({ socket: s.socket });
    cleanups.push(() => c.close());
    const ids: string[] = [];
    // Three 400 KiB objects in a 1 MiB arena: the third spills the first, least recently used.
    for (let i = 0; i < 3; i++) ids.push(await c.put(new Uint8Array(400 * KiB).fill(i)));
    const afterPuts = await scrape(s.url);
    await c.get(ids[0]!); // read back, spilling the next oldest to make room
    const afterGet = await scrape(s.url);
    const figures = (text: string) => ({
      spills: sample(text, 'trellis_store_spills_total'),
      restores: sample(text, 'trellis_store_restores_total'),
      spilledObjects: sample(text, 'trellis_store_spilled_objects'),
      spilledBytes: sample(text, 'trellis_store_spilled_bytes'),
    });
    expect(figures(afterPuts)).toEqual({ spills: 1, restores: 0, spilledObjects: 1, spilledBytes: 400 * KiB });
    expect(figures(afterGet)).toEqual({ spills: 2, restores: 1, spilledObjects: 1, spilledBytes: 400 * KiB });
  });

  describe('between two stores', () => {
    let etcd: EtcdHandle;
    beforeAll(async () => {
      etcd = await startEtcd();
    });
    afterAll(async () => {
      await etcd.stop();
    });

    it('a migration counts its object and bytes on the store that pulls, and the bytes sent on the one that serves', async () => {
      const metaPrefix = `/trellis-test/${randomUUID()}`;
      const [a, b] = await Promise.all(
        ['127.0.0.1', '127.0.0.2'].map((host, i) =>
          store(clusterStoreArgs({ name: `node${i}`, size: '64M', etcdUrl: etcd.url, metaPrefix, host, tokenFile })),
        ),
      );
      const ca = await connect({ socket: a!.socket });
      const cb = await connect({ socket: b!.socket });
      cleanups.push(
        () => ca.close(),
        () => cb.close(),
      );
      const id = await ca.put(new Uint8Array(512 * KiB).fill(9), { persist: true });
      const local = await cb.migrate(id);
      expect(local).not.toBe(id);
      const [ta, tb] = await Promise.all([scrape(a!.url), scrape(b!.url)]);
      expect({
        pulled: sample(tb, 'trellis_store_migrations_total'),
        pulledBytes: sample(tb, 'trellis_store_migration_bytes_total'),
        failed: sample(tb, 'trellis_store_migration_failures_total'),
        served: sample(ta, 'trellis_store_rpc_sent_bytes_total'),
        servedGets: sample(ta, 'trellis_store_gets_total', { transport: 'rpc', kind: 'Tensor' }),
      }).toEqual({ pulled: 1, pulledBytes: 512 * KiB, failed: 0, served: 512 * KiB, servedGets: 1 });
      expect(await promtool(families(tb))).toEqual({ code: 0, output: '' });
    });
  });
});
