/**
 * The client's life: close (twice, with calls in flight, then every method),
 * `await using`, and a store that dies under it.
 */
import { join } from 'node:path';
import { connect, type Tensor, type TrellisClient } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesMismatch } from './helpers/bytes.js';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { all, codesOf, everyMethod } from './helpers/lifecycle.js';
import { startRpcStore, TOKEN } from './helpers/rpc.js';
import { spawnStore, startStore, tempDir } from './helpers/store.js';

const ID = 'o00000000deadbeef';

describe('client lifecycle', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await killChildren();
    for (const f of cleanups.splice(0).reverse()) await f();
  });

  async function store() {
    const env = await startStore({ size: 16 * 1024 * 1024 });
    cleanups.push(env.stop);
    return env;
  }

  it('close() is safe twice, fails calls in flight, and every method after it fails with ERR_CLOSED', async () => {
    const env = await store();
    const c = await connect({ socket: env.socket });
    const id = await c.put(new Float32Array([1, 2]));
    const held = (await c.get(id)) as Tensor;
    const writer = await c.createBlob(8);
    const inFlight = errCode(c.getName('never', { wait: true }));

    const first = c.close();
    const second = c.close();
    await expect(first).resolves.toBeUndefined();
    await expect(second).resolves.toBeUndefined();
    await expect(c.close()).resolves.toBeUndefined();
    expect(await inFlight).toBe('ERR_CLOSED');

    const methods = everyMethod(c, id);
    expect(await codesOf(methods)).toEqual(all(methods, 'ERR_CLOSED'));
    expect(await errCode(c.getMany([]))).toBe('ERR_CLOSED'); // even with nothing to ask for
    await expect(c[Symbol.asyncDispose]()).resolves.toBeUndefined();
    expect(await errCode(writer.seal())).toBe('ERR_CLOSED');
    expect(c.heldCount).toBe(0);
    // A view taken before close still reads (the mapping outlives the connection).
    expect(Array.from(held.data as Float32Array)).toEqual([1, 2]);

    // The store let go of the connection: its reference and its unsealed blob are gone.
    await using other = await connect({ socket: env.socket });
    await eventually(async () => (await other.status()).connections === 1, 'the store drops the closed client');
    expect(await errCode(other.get(writer.id))).toBe('ERR_OBJECT_NOT_FOUND');
    const [summary] = (await other.list()).filter((o) => o.id === id);
    expect(summary.references).toBe(0);
  });

  it("close() lets go of the store's memory: fds at once, mappings when the last view is collected", async () => {
    const env = await store();
    await using c = await connect({ socket: env.socket });
    const id = await c.put(new Float32Array(1 << 16).fill(0.5));
    const child = startChild(`
      import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
      import v8 from 'node:v8';
      import vm from 'node:vm';
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc');
      const memfdFds = () => readdirSync('/proc/self/fd').filter((fd) => {
        try { return readlinkSync('/proc/self/fd/' + fd).includes('memfd:trellis'); } catch { return false; }
      }).length;
      const memfdLines = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/memfd:trellis'));
      // Arena segments; the fast path's directory and pin pages are counted apart.
      const memfdMaps = () => memfdLines().filter((l) => !l.includes(':directory') && !l.includes(':pins:')).length;
      const fastMaps = () => ({ directory: memfdLines().filter((l) => l.includes(':directory')).length, pins: memfdLines().filter((l) => l.includes(':pins:')).length });
      const a = await connect({ socket: ${JSON.stringify(env.socket)} });
      const b = await connect({ socket: ${JSON.stringify(env.socket)} });
      await a.fastPath;
      await b.fastPath;
      let t = await a.get(${JSON.stringify(id)});
      await b.get(${JSON.stringify(id)});
      const open = { fds: memfdFds(), maps: memfdMaps() };
      const fastOpen = fastMaps();
      await a.close();
      const oneClosed = { fds: memfdFds(), maps: memfdMaps() };
      await b.close();
      const closed = { fds: memfdFds(), maps: memfdMaps(), value: t.data[100] };
      t = null;
      for (let i = 0; i < 50 && memfdLines().length > 0; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 20));
      }
      const maps = memfdMaps();
      send({ open, oneClosed, closed, fastOpen, collected: { fds: memfdFds(), maps, fast: fastMaps() } });
    `);
    const r = await child.next();
    expect(await child.exited).toEqual({ code: 0, signal: null });
    expect(r.open).toEqual({ fds: 1, maps: 1 });
    expect(r.oneClosed).toEqual({ fds: 1, maps: 1 }); // the other client still uses the segment
    expect(r.closed).toEqual({ fds: 0, maps: 1, value: 0.5 }); // a view outlives close
    // One directory per process, one pin page per client; all gone once nothing holds them.
    expect(r.fastOpen).toEqual({ directory: 1, pins: 2 });
    expect(r.collected).toEqual({ fds: 0, maps: 0, fast: { directory: 0, pins: 0 } });
  });

  it('await using closes the client at the end of the block', async () => {
    const env = await store();
    let escaped: TrellisClient | undefined;
    await using watcher = await connect({ socket: env.socket });
    {
      await using c = await connect({ socket: env.socket });
      escaped = c;
      await c.put(new Uint8Array([1]), { name: 'scoped' });
      expect((await watcher.status()).connections).toBe(2);
    }
    expect(await errCode(escaped.status())).toBe('ERR_CLOSED');
    await eventually(async () => (await watcher.status()).connections === 1, 'the scoped client is gone');
    expect(await watcher.getName('scoped')).toMatch(/^o[0-9a-f]{16}$/);
  });

  it('connecting where no store listens fails with ERR_DISCONNECTED', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(async () => cleanup());
    expect(await errCode(connect({ socket: join(dir, 'nobody.sock') }))).toBe('ERR_DISCONNECTED');
  });

  it('kill -9 of the store: pending and later calls fail with ERR_DISCONNECTED, views stay readable', async () => {
    const s = await spawnStore(['--size', '64M']);
    cleanups.push(s.stop);
    const c = await connect({ socket: s.socket });
    cleanups.push(() => c.close());
    const data = new Float64Array(1 << 18).map((_, i) => Math.sqrt(i)); // 2 MiB: create + seal path
    const id = await c.put(data);
    const small = await c.put(new Int16Array([-1, 0, 1])); // inline path
    const view = (await c.get(id)) as Tensor;
    const smallView = (await c.get(small)) as Tensor;
    const pending = errCode(c.getName('never', { wait: true }));
    await eventually(async () => (await c.status()).nameWaiters === 1, 'the wait reaches the store');

    s.child.kill('SIGKILL');
    expect(await pending).toBe('ERR_DISCONNECTED');
    // Everything that needs the store fails (ID is not held here, so get must ask the store).
    const { getSync, ...rest } = await codesOf(everyMethod(c, ID, small));
    expect(rest).toEqual(all(rest, 'ERR_DISCONNECTED'));
    expect(getSync).toBe('no error'); // an id not held: undefined, no round trip
    expect(c.getSync(ID)).toBeUndefined();

    // The memfd outlives the store while mapped here: the bytes are all still there.
    expect(bytesMismatch(view.data, data)).toBeNull();
    expect(Array.from(smallView.data as Int16Array)).toEqual([-1, 0, 1]);
    expect(((c.getSync(id) as Tensor).data as Float64Array)[12345]).toBe(Math.sqrt(12345));

    await c.close();
    expect(await errCode(c.status())).toBe('ERR_CLOSED');
    expect(await s.stop()).toBeNull(); // it died by signal
  });
});

describe('RPC client lifecycle', () => {
  it('close() is safe twice, fails calls in flight, and every method after it fails with ERR_CLOSED', async () => {
    const a = await startRpcStore('127.0.0.1', { size: 16 * 1024 * 1024 });
    try {
      const c = await connect({ rpc: a.rpc, token: TOKEN });
      const id = await c.put(new Float32Array([1, 2]));
      const copy = (await c.get(id)) as Tensor;
      const inFlight = errCode(c.getName('never', { wait: true }));
      await eventually(() => a.store.status().nameWaiters === 1, 'the wait reaches the store');

      await Promise.all([expect(c.close()).resolves.toBeUndefined(), expect(c.close()).resolves.toBeUndefined()]);
      await expect(c.close()).resolves.toBeUndefined();
      expect(await inFlight).toBe('ERR_CLOSED');

      const methods = everyMethod(c, id);
      expect(await codesOf(methods)).toEqual(all(methods, 'ERR_CLOSED'));
      expect(await errCode(c.getMany([]))).toBe('ERR_CLOSED'); // even with nothing to ask for, as over IPC
      await expect(c[Symbol.asyncDispose]()).resolves.toBeUndefined();
      expect(c.heldCount).toBe(0);
      expect(Array.from(copy.data as Float32Array)).toEqual([1, 2]); // a copy is the caller's
      // The store let go of the connection and its name wait.
      await eventually(() => a.store.status().nameWaiters === 0, 'the store drops the closed client');
    } finally {
      await a.stop();
    }
  });
});
