/**
 * A bounded soak with hostile input (issue 8): several client processes run
 * mixed put / get / delete / name operations on a store child process with a
 * small arena and a spill directory, each value checked byte for byte against
 * the checksum it was stored with; one client is killed with SIGKILL
 * mid-run; a hostile client abuses depth, metadata size, names and frames
 * meanwhile. At the end the store is up, every read was exact, and memory,
 * records and entries are back to the baseline.
 *
 * Short in CI (SOAK_MS, default 3000 ms); `npm run soak` runs it for 60 s.
 * It prints ops, errors by code, bytes read and memory before and after.
 */
import { connect } from 'trellis';
import { afterAll, describe, expect, it } from 'vitest';
import { killChildren, startChild } from './helpers/child.js';
import { RawConn, u32 } from './helpers/raw-conn.js';
import { spawnStore, tempDir } from './helpers/store.js';

const SOAK_MS = Number(process.env.SOAK_MS ?? 3000);
const CLIENTS = Number(process.env.SOAK_CLIENTS ?? 4);

/** One worker's loop: its own objects only, so every read must match what it stored. */
const WORKER = (socket: string, ms: number, seed: number) => `
const c = await connect({ socket: ${JSON.stringify(socket)} });
let s = ${seed} >>> 0;
const rnd = (n) => { s = (s * 1664525 + 1013904223) >>> 0; return s % n; };
const sum = (b) => { let h = 2166136261; for (let i = 0; i < b.length; i += 97) h = Math.imul(h ^ b[i], 16777619) >>> 0; return (h ^ b.length) >>> 0; };
const mine = [];
const stats = { ops: 0, reads: 0, bytesRead: 0, mismatches: 0, errors: {} };
const fail = (e) => { const k = e?.code ?? String(e); stats.errors[k] = (stats.errors[k] ?? 0) + 1; };
const end = Date.now() + ${ms};
send({ started: true });
while (Date.now() < end) {
  stats.ops++;
  const op = rnd(10);
  try {
    if (op < 4 || mine.length === 0) {
      const n = 1 + rnd(1 << (10 + rnd(11)));
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i += 61) b[i] = rnd(256);
      const id = await c.putBlob(b);
      mine.push({ id, sum: sum(b) });
    } else if (op < 8) {
      const o = mine[rnd(mine.length)];
      const v = await c.getBlob(o.id);
      stats.reads++;
      stats.bytesRead += v.length;
      if (sum(v) !== o.sum) stats.mismatches++;
      await c.release(o.id);
    } else if (op < 9) {
      const [o] = mine.splice(rnd(mine.length), 1);
      await c.delete(o.id);
    } else {
      const o = mine[rnd(mine.length)];
      await c.putName('soak/${seed}/' + rnd(8), o.id, { overwrite: true });
    }
  } catch (e) { fail(e); }
}
for (const o of mine) { try { await c.delete(o.id); } catch (e) { fail(e); } }
for (const n of Object.keys(await c.listNames('soak/${seed}/'))) { try { await c.dropName(n); } catch (e) { fail(e); } }
send(stats);
await c.close();
`;

describe('soak', () => {
  const { dir, cleanup } = tempDir('trellis-soak-');
  afterAll(async () => {
    await killChildren();
    cleanup();
  });

  it(
    `mixed ops from ${CLIENTS} processes, a kill -9, hostile input: exact reads, store up, memory back to baseline`,
    async () => {
      const store = await spawnStore(['--size', '32M', '--segment-size', '8M', '--spill-dir', `${dir}/spill`]);
      try {
        await using admin = await connect({ socket: store.socket });
        const base = await admin.status();
        const workers = Array.from({ length: CLIENTS }, (_, i) => startChild(WORKER(store.socket, SOAK_MS, i + 1)));
        for (const w of workers) expect(await w.next(20_000)).toEqual({ started: true });
        const victim = startChild(WORKER(store.socket, 60_000, 99));
        await victim.next(20_000);

        // Hostile input while they run: each answered with its code, none takes the store down.
        const hostile: Record<string, string> = {};
        const code = async (name: string, p: Promise<unknown>) => {
          try {
            await p;
            hostile[name] = 'no error';
          } catch (e) {
            hostile[name] = (e as { code?: string }).code ?? String(e);
          }
        };
        let top = await admin.putBlob(new Uint8Array([1]));
        for (let i = 0; i < 256; i++) top = await admin.putObject({ typename: 'Link', members: [top] });
        await code('depth 257', admin.putObject({ typename: 'Link', members: [top] }));
        await code(
          'meta 2 MiB',
          admin.putObject({ typename: 'M', meta: { pad: 'x'.repeat(2 << 20) }, members: [top] }),
        );
        await code('name __proto__', admin.putName('__proto__', top));
        const raw = await RawConn.open(store.socket);
        raw.write(u32(1 << 24));
        await code(
          'frame before hello',
          raw.closed.then(() => Promise.reject({ code: String(raw.frames[0]?.code) })),
        );
        victim.proc.kill('SIGKILL');
        await victim.exited;
        await admin.dropName('__proto__');
        await admin.delete(top);
        expect(hostile).toEqual({
          'depth 257': 'ERR_BAD_REQUEST',
          'meta 2 MiB': 'ERR_BAD_REQUEST',
          'name __proto__': 'no error',
          'frame before hello': 'ERR_PROTOCOL',
        });

        const results = await Promise.all(workers.map((w) => w.next(SOAK_MS + 60_000)));
        const total = { ops: 0, reads: 0, bytesRead: 0, mismatches: 0, errors: {} as Record<string, number> };
        for (const r of results as unknown as (typeof total)[]) {
          total.ops += r.ops;
          total.reads += r.reads;
          total.bytesRead += r.bytesRead;
          total.mismatches += r.mismatches;
          for (const [k, n] of Object.entries(r.errors)) total.errors[k] = (total.errors[k] ?? 0) + n;
        }
        for (const w of workers) expect((await w.exited).code).toBe(0);
        // The killed client's references and blobs go with its connection; wait until the store saw it.
        let after = await admin.status();
        for (let i = 0; i < 100 && after.connections > 1; i++) after = await admin.status();
        // The victim's objects were its own: sealed ones outlive it, so delete what is left.
        const left = (await admin.list({ limit: 100_000 })).map((o) => o.id);
        if (left.length > 0) await admin.delete(left);
        after = await admin.status();
        process.stdout.write(
          `soak: ${SOAK_MS} ms, ${CLIENTS} clients: ${total.ops} ops, ${total.reads} reads (${total.bytesRead} bytes), ` +
            `${total.mismatches} mismatches, errors ${JSON.stringify(total.errors)}; ` +
            `memory ${base.memoryUsed} -> ${after.memoryUsed}, records ${base.records.bytes} -> ${after.records.bytes}\n`,
        );
        expect(total.mismatches).toBe(0);
        // Memory full is an answer a client may get under load; nothing else is.
        expect(Object.keys(total.errors).filter((k) => k !== 'ERR_OUT_OF_MEMORY')).toEqual([]);
        expect({
          memoryUsed: after.memoryUsed,
          records: after.records.bytes,
          entries: after.entries,
          names: after.names,
          spilled: after.spill.objects,
        }).toEqual({ memoryUsed: 0, records: base.records.bytes, entries: 0, names: 0, spilled: 0 });
      } finally {
        await store.stop();
      }
    },
    120_000 + SOAK_MS,
  );
});
