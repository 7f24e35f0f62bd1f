/**
 * The fast path (docs/PROTOCOL.md "The fast path"): gets of small published
 * objects with no request, pins in shared memory that the store honours
 * before it frees or spills, and the pins of a client killed with SIGKILL.
 */
import { connect, type Tensor } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesMismatch } from './helpers/bytes.js';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { startStore, tempDir } from './helpers/store.js';

const MIB = 1024 * 1024;

/** The bytes every object of the stress test holds: a function of its id counter, so a reader can check any object alone. */
const PATTERN = `(id, i) => (Number.parseInt(id.slice(5), 16) * 7 + i * 13) & 0xff`;

describe('fast path', () => {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await killChildren();
    for (const stop of stops.splice(0)) await stop();
  });
  async function store(opts: Parameters<typeof startStore>[0] = {}) {
    const env = await startStore({ size: 64 * MIB, ...opts });
    stops.push(env.stop);
    return env;
  }

  it('a get of a small tensor or blob takes no request, and the store counts it', async () => {
    const env = await store();
    await using c = await connect({ socket: env.socket });
    expect(await c.fastPath).toBe(true);
    const t = await c.put(new Float32Array([1, 2, 3, 4]));
    const b = await c.putBlob(new Uint8Array([9, 8, 7]));
    // Map the segment first: a fast get never maps one itself.
    await c.get(t);
    await c.release(t);
    const before = (await c.status()).counters;
    const tv = (await c.get(t)) as Tensor;
    const bv = (await c.get(b)) as Uint8Array;
    expect({ dtype: tv.dtype, shape: tv.shape, data: Array.from(tv.data as Float32Array), id: tv.id }).toEqual({
      dtype: 'float32',
      shape: [4],
      data: [1, 2, 3, 4],
      id: t,
    });
    expect(Array.from(bv)).toEqual([9, 8, 7]);
    const after = (await c.status()).counters;
    expect({ gets: after.gets - before.gets, fastGets: after.fastGets - before.fastGets }).toEqual({
      gets: 0,
      fastGets: 2,
    });
    // A fast pin is a reference like any other.
    const refs = Object.fromEntries((await c.list()).map((o) => [o.id, o.references]));
    expect(refs[t]).toBe(1);
    await c.release(t);
    await c.release(b);
    expect(await errCode(c.release(t))).toBe('ERR_NOT_REFERENCED');
  });

  it('a deleted object is hidden at once and freed on the last release of a fast pin', async () => {
    const env = await store();
    await using c = await connect({ socket: env.socket });
    await using other = await connect({ socket: env.socket });
    await c.fastPath;
    const id = await c.put(new Uint8Array(64 * 1024).fill(3));
    await c.release((await c.get(id), id)); // maps the segment
    const base = await c.status();
    const v = (await c.get(id)) as Tensor;
    await other.delete(id);
    expect(await errCode(other.get(id))).toBe('ERR_OBJECT_NOT_FOUND');
    const held = await other.status();
    expect({ used: held.memoryUsed, deferred: held.counters.fastDeferred }).toEqual({
      used: base.memoryUsed,
      deferred: 1,
    });
    expect(v.data[1000]).toBe(3);
    await c.release(id);
    // The client said `unpinned` before this status request, on the same connection.
    const after = await c.status();
    expect({ used: after.memoryUsed, deferred: after.counters.fastDeferred, entries: after.entries }).toEqual({
      used: base.memoryUsed - 64 * 1024,
      deferred: 0,
      entries: base.entries - 2,
    });
  });

  it('a blob pinned through the fast path is not spilled under its reader', async () => {
    const { dir: spillDir, cleanup } = tempDir('trellis-fast-spill-');
    stops.push(async () => cleanup());
    const env = await store({ size: 1 * MIB, spillDir });
    await using c = await connect({ socket: env.socket });
    await c.fastPath;
    const first = await c.put(new Uint8Array(200 * 1024).fill(0x5a));
    await c.release((await c.get(first), first));
    const v = (await c.get(first)) as Tensor;
    // Fill the store: everything unpinned may spill, the pinned one may not.
    const more: string[] = [];
    for (let i = 0; i < 8; i++) more.push(await c.put(new Uint8Array(200 * 1024).fill(i)));
    const s = await c.status();
    expect(s.counters.spills).toBeGreaterThan(0);
    const [summary] = (await c.list()).filter((o) => o.id === v.id);
    expect(summary.references).toBe(1);
    expect(bytesMismatch(v.data, new Uint8Array(200 * 1024).fill(0x5a))).toBeNull();
    await c.release(first);
  });

  it('kill -9 of a client drops its fast pins: what it held alone is freed', async () => {
    const env = await store();
    await using c = await connect({ socket: env.socket });
    const id = await c.put(new Uint8Array(128 * 1024).fill(4));
    const base = await c.status();
    const child = startChild(`
      const c = await connect({ socket: ${JSON.stringify(env.socket)} });
      await c.fastPath;
      await c.release((await c.get(${JSON.stringify(id)}), ${JSON.stringify(id)}));
      const before = (await c.status()).counters.fastGets;
      const t = await c.get(${JSON.stringify(id)});
      send({ fast: (await c.status()).counters.fastGets - before, first: t.data[0] });
      setInterval(() => {}, 1 << 30);
    `);
    expect(await child.next()).toEqual({ fast: 1, first: 4 });
    await c.delete(id);
    const during = await c.status();
    expect({ used: during.memoryUsed, deferred: during.counters.fastDeferred }).toEqual({
      used: base.memoryUsed,
      deferred: 1,
    });
    child.proc.kill('SIGKILL');
    expect((await child.exited).signal).toBe('SIGKILL');
    await eventually(async () => (await c.status()).connections === 1, 'the store drops the dead client');
    const after = await c.status();
    expect({ used: after.memoryUsed, deferred: after.counters.fastDeferred }).toEqual({
      used: base.memoryUsed - 128 * 1024,
      deferred: 0,
    });
  });

  it('no reader ever sees another object bytes while a writer deletes and re-puts (stress)', async () => {
    // Freed blocks are reused at once by the next put of the same size: a
    // view that outlived its object would show the next object's bytes.
    const env = await store({ size: 8 * MIB, punchDelayMs: 0 });
    const readers = Array.from({ length: 3 }, () =>
      startChild(`
        const pattern = ${PATTERN};
        const c = await connect({ socket: ${JSON.stringify(env.socket)} });
        await c.fastPath;
        let stop = false;
        command().then(() => { stop = true; });
        send({ ready: true });
        let ok = 0, missing = 0, bad = 0, held = 0;
        while (!stop) {
          // The writer keeps a few live at a time: the list names them all, and many are gone by the get.
          const ids = (await c.list({ typename: 'Tensor' })).map((o) => o.id);
          for (const [k, id] of ids.entries()) {
            let t;
            try { t = await c.get(id); } catch (e) { missing++; continue; }
            const check = () => { for (let i = 0; i < t.data.length; i++) if (t.data[i] !== pattern(id, i)) return false; return true; };
            if (!check()) bad++;
            // Hold it across a turn of the event loop, while the writer runs.
            if (k % 3 === 0) { held++; await new Promise((r) => setImmediate(r)); if (!check()) bad++; }
            await c.release(id);
            ok++;
          }
        }
        send({ ok, missing, bad, held, fastGets: (await c.status()).counters.fastGets });
      `),
    );
    for (const r of readers) expect(await r.next(30_000)).toEqual({ ready: true });
    // By the socket: a ring put's id comes from a leased block, which this writer could not foretell.
    await using w = await connect({ socket: env.socket, putRing: false });
    const pattern = new Function(`return ${PATTERN}`)() as (id: string, i: number) => number;
    // This writer alone makes objects: a tensor put takes two ids (its blob's, then its own),
    // so the writer knows each id before the put and writes the bytes that id calls for.
    // A fresh store: the first tensor put gets counter 2 (its blob 1).
    let last = 'o0000000000000000';
    const live: string[] = [];
    const deadline = Date.now() + 4000;
    let puts = 0;
    while (Date.now() < deadline) {
      const next = `o0000${(Number.parseInt(last.slice(5), 16) + 2).toString(16).padStart(12, '0')}`;
      const bytes = new Uint8Array(1024);
      for (let i = 0; i < 1024; i++) bytes[i] = pattern(next, i);
      last = await w.put(bytes);
      expect(last).toBe(next);
      live.push(last);
      puts++;
      if (live.length > 16) await w.delete(live.splice(0, 8));
    }
    for (const r of readers) r.tell('stop');
    const results = [];
    for (const r of readers) results.push((await r.next()) as { ok: number; bad: number; held: number });
    const s = await w.status();
    expect(results.map((r) => r.bad)).toEqual([0, 0, 0]);
    // The race was run: readers got objects, held some across deletes, and the store had to wait for them.
    for (const r of results) expect(r.ok).toBeGreaterThan(50);
    expect(s.counters.fastGets).toBeGreaterThan(150);
    expect(s.counters.fastDeferrals).toBeGreaterThan(0);
    expect(puts).toBeGreaterThan(50);
  }, 60_000);
});

describe('fast path wire', () => {
  it('the directory names every dtype the tensor codec knows, in a fixed order', async () => {
    const { DTYPES } = await import('../dist/src/codecs/tensor.js');
    const { DTYPE_CODES } = await import('../dist/src/protocol/fast-directory.js');
    expect([...DTYPE_CODES].sort()).toEqual(Object.keys(DTYPES).sort());
  });

  it('fds with fastpath and unpinned decode, and their answers are checked', async () => {
    const { decodeReply, decodeRequest } = await import('../dist/src/protocol/messages.js');
    expect(decodeRequest({ t: 'fds', rid: 0, token: 'ab', segments: [], fastpath: true })).toEqual({
      t: 'fds',
      rid: 0,
      token: 'ab',
      segments: [],
      fastpath: true,
    });
    expect(decodeRequest({ t: 'unpinned', rid: 3, noReply: true })).toEqual({ t: 'unpinned', rid: 3 });
    expect(decodeReply('fds', { t: 'ok', rid: 0, segments: [], fastpath: { directory: 4, pins: 8 } })).toEqual({
      segments: [],
      fastpath: { directory: 4, pins: 8 },
    });
    expect(
      await errCode(() => decodeReply('fds', { t: 'ok', rid: 0, segments: [], fastpath: { directory: -1 } })),
    ).toBe('ERR_PROTOCOL');
    expect(await errCode(() => decodeRequest({ t: 'fds', rid: 0, token: 'ab', segments: [] }))).toBe('ERR_BAD_REQUEST');
  });
});
