/**
 * A store's connections to other stores (src/store/peer-channels.ts): kept
 * open between migrations, dropped by a failed transfer, and replaced when
 * the peer restarts, with one retry on a new connection and a typed error
 * when the peer is gone. The peer is a real store in a child process,
 * killed with SIGKILL and started again on the same port.
 */
import { connect } from 'trellis';
import { type MigrationStats, migrateFrom, migratorOf } from 'trellis/store';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bytesMismatch } from './helpers/bytes.js';
import { errCode, killChildren, startChild } from './helpers/child.js';
import { MIB, type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';
import { tempDir } from './helpers/store.js';

describe('connections between stores', () => {
  let b: RpcStore;
  const dirs: (() => void)[] = [];
  beforeAll(async () => {
    b = await startRpcStore('127.0.0.2', { size: 64 * MIB });
  });
  afterEach(async () => {
    await killChildren();
    for (const d of dirs.splice(0)) d();
  });
  afterAll(async () => {
    await b?.stop();
  });

  /** A store on 127.0.0.1 (RPC on `port`, 0: any) in a child process, holding two tensors of 1 MiB of `fill`. */
  async function source(port: number, fill: number) {
    const { dir, cleanup } = tempDir('trellis-peer-');
    dirs.push(cleanup);
    const child = startChild(`
      const { StoreServer, startRpc } = trellis;
      const socket = ${JSON.stringify(`${dir}/store.sock`)};
      const store = await StoreServer.start(
        { socket, size: ${16 * MIB}, rpcPort: ${port}, rpcHost: '127.0.0.1', token: ${JSON.stringify(TOKEN)} },
        startRpc,
      );
      const c = await connect({ socket });
      const w = await c.createTensor('uint8', [${MIB}]);
      w.data.fill(${fill});
      const w2 = await c.createTensor('uint8', [${MIB}]);
      w2.data.fill(${fill});
      send({ endpoint: store.rpcAddress, id: await w.seal(), id2: await w2.seal() });
      await command();
    `);
    const r = (await child.next(60_000)) as { endpoint: { host: string; port: number }; id: string; id2: string };
    return { child, ...r };
  }

  /** Migrates `id` to B, checks every byte is `fill`, and deletes the copy (so the next migration transfers again). */
  async function migrateAndCheck(endpoint: { host: string; port: number }, id: string, fill: number) {
    const local = await migrateFrom(b.store, endpoint, TOKEN, id);
    await using ipc = await connect({ socket: b.socket });
    const v = (await ipc.get(local)) as { data: Uint8Array };
    expect(bytesMismatch(v.data, new Uint8Array(MIB).fill(fill))).toBeNull();
    await ipc.release(local);
    await ipc.delete(local);
  }

  it('one connection serves many migrations; after the peer dies a stale one is retried once, then ERR_DISCONNECTED; a restarted peer gets a new one', async () => {
    const first = await source(0, 3);
    const before = migratorOf(b.store).stats();
    for (let i = 0; i < 3; i++) await migrateAndCheck(first.endpoint, first.id, 3);
    const since = (s: MigrationStats) => ({
      opened: s.peers.opened - before.peers.opened,
      reused: s.peers.reused - before.peers.reused,
      retried: s.peers.retried - before.peers.retried,
      open: s.peers.open,
      failed: s.failed - before.failed,
    });
    expect(since(migratorOf(b.store).stats())).toEqual({ opened: 1, reused: 2, retried: 0, open: 1, failed: 0 });

    // Killed, and asked in the same tick: B has not seen the close yet, so the request goes out on the
    // dead connection, fails, and is sent again on a new one, which cannot reach the peer either.
    process.kill(first.child.pid, 'SIGKILL');
    expect(await errCode(migrateFrom(b.store, first.endpoint, TOKEN, first.id))).toBe('ERR_DISCONNECTED');
    expect(since(migratorOf(b.store).stats())).toEqual({ opened: 1, reused: 3, retried: 1, open: 0, failed: 1 });

    // The same address again, a new run of the store: a new connection, and the bytes of the new run.
    const again = await source(first.endpoint.port, 5);
    expect(again.endpoint).toEqual(first.endpoint);
    await migrateAndCheck(again.endpoint, again.id, 5);
    expect(since(migratorOf(b.store).stats())).toEqual({ opened: 2, reused: 3, retried: 1, open: 1, failed: 1 });
  });

  it('a transfer that fails on a shared connection leaves the others on it running, and the connection then closes', async () => {
    const src = await source(0, 9);
    const before = migratorOf(b.store).stats();
    // One migration of a missing id fails (ERR_OBJECT_NOT_FOUND) while two good ones share its connection.
    const [good1, bad, good2] = await Promise.allSettled([
      migrateAndCheck(src.endpoint, src.id, 9),
      migrateFrom(b.store, src.endpoint, TOKEN, 'o0001ffffffffffff'),
      migrateAndCheck(src.endpoint, src.id2, 9),
    ]);
    expect(good1.status).toBe('fulfilled');
    expect(good2.status).toBe('fulfilled');
    expect(bad.status === 'rejected' && (bad.reason as { code: string }).code).toBe('ERR_OBJECT_NOT_FOUND');
    const s = migratorOf(b.store).stats();
    // The failed transfer retired the connection: it closed once the others were done, and the next one is new.
    expect(s.peers.opened - before.peers.opened).toBe(1);
    expect(s.peers.open).toBe(0);
    await migrateAndCheck(src.endpoint, src.id, 9);
    expect(migratorOf(b.store).stats().peers.opened - before.peers.opened).toBe(2);
  });
});
