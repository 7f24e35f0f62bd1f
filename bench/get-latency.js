/**
 * get latency by object size, warm, read by a client in another process than
 * the one that put the objects (the store is a third process).
 *
 *   (a) async get over IPC, release after each get (one round trip each)
 *   (b) getSync on an object this client already holds (no round trip)
 *   (c) getMany of 100 distinct ids in one request, cost per object
 *
 * 100 distinct 256 MiB or 1 GiB objects do not fit in RAM, so at those sizes
 * the 100 ids are Tensor objects over one shared blob (exactly what put makes:
 * a Tensor record whose member is the blob); the store does the same work per id.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import {
  childMain,
  fmtBytes,
  fmtRatio,
  fmtUs,
  GiB,
  isChild,
  KiB,
  MiB,
  met,
  nowUs,
  pin,
  report,
  runChild,
  startStore,
  stats,
  stopChild,
  tempDir,
  track,
  trellis,
  waitForOutput,
} from './lib.js';

const SIZES = [KiB, MiB, 256 * MiB, GiB];
const BATCH = 100;
const ASYNC_N = 3000;
const SYNC_N = 200_000;
const BATCH_N = 200;

/** The floor under any request/response IPC in Node: 64 bytes to an echo server and back. */
async function pingPong(path) {
  const s = netConnect(path);
  await once(s, 'connect');
  const buf = Buffer.alloc(64);
  const lat = [];
  for (let i = 0; i < ASYNC_N + 300; i++) {
    const t = nowUs();
    await new Promise((resolve) => {
      s.once('data', resolve);
      s.write(buf);
    });
    if (i >= 300) lat.push(nowUs() - t);
  }
  s.destroy();
  return stats(lat);
}

async function startEcho(dir) {
  const path = join(dir, 'echo.sock');
  const code = `require('node:net').createServer((s) => s.pipe(s)).listen(${JSON.stringify(path)}, () => console.log('ready'))`;
  const child = track(spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] }));
  await waitForOutput(child, 'ready', 'echo server');
  pin(child.pid, '0');
  return { path, stop: () => stopChild(child) };
}

async function reader({ socket, echo, cases }) {
  const { connect } = await trellis();
  const raw = await pingPong(echo);
  const client = await connect({ socket, name: 'get-latency reader' });
  // The floor: the cheapest request the protocol has (listNames of an empty prefix range).
  const floor = [];
  for (let i = 0; i < ASYNC_N + 300; i++) {
    const t = nowUs();
    await client.listNames('\u0000none');
    if (i >= 300) floor.push(nowUs() - t);
  }
  const out = [];
  for (const { size, ids } of cases) {
    const id = ids[0];
    let t = nowUs();
    const first = await client.get(id); // maps the segment: the cold cost, reported apart
    const firstUs = nowUs() - t;
    if (first.data.byteLength !== size || first.data[size - 1] !== 7) throw new Error(`bad object ${id}`);
    await client.release(id);

    const get = [];
    const release = [];
    for (let i = 0; i < ASYNC_N + 300; i++) {
      t = nowUs();
      await client.get(id);
      const t1 = nowUs();
      await client.release(id);
      if (i >= 300) {
        get.push(t1 - t);
        release.push(nowUs() - t1);
      }
    }

    await client.get(id); // hold it: getSync needs a held object
    const sync = [];
    for (let i = 0; i < SYNC_N; i++) {
      t = nowUs();
      client.getSync(id);
      sync.push(nowUs() - t);
      client.release(id); // not the last reference: no round trip
    }
    await client.release(id);

    const many = [];
    const releaseMany = [];
    for (let i = 0; i < BATCH_N + 20; i++) {
      t = nowUs();
      const vs = await client.getMany(ids);
      const t1 = nowUs();
      if (vs.length !== BATCH) throw new Error('short batch');
      await Promise.all(ids.map((x) => client.release(x)));
      if (i >= 20) {
        many.push((t1 - t) / BATCH);
        releaseMany.push((nowUs() - t1) / BATCH);
      }
    }
    out.push({
      size,
      firstUs,
      get: stats(get),
      release: stats(release),
      sync: stats(sync),
      many: stats(many),
      releaseMany: stats(releaseMany),
    });
  }
  await client.close();
  return { raw, floor: stats(floor), out };
}

const both = (a, b) =>
  `same CPU p50 ${fmtUs(a.p50)} p99 ${fmtUs(a.p99)} | cross-CPU p50 ${fmtUs(b.p50)} p99 ${fmtUs(b.p99)}`;
const one = (a) => `p50 ${fmtUs(a.p50)} / p99 ${fmtUs(a.p99)}`;

async function main() {
  const { connect } = await trellis();
  const store = await startStore({ size: '3G', cpus: '0' });
  const tmp = tempDir();
  const echo = await startEcho(tmp.dir);
  const client = await connect({ socket: store.socket, name: 'get-latency writer' });
  const cases = [];
  const t = nowUs();
  for (const size of [...SIZES].reverse()) {
    const ids = [];
    if (size <= MiB) {
      const src = new Uint8Array(size).fill(7);
      for (let i = 0; i < BATCH; i++) ids.push(await client.put(src));
    } else {
      const w = await client.createBlob(size);
      w.buffer.fill(7);
      const blob = await w.seal();
      const spec = { typename: 'Tensor', meta: { dtype: 'uint8', shape: [size] }, members: [blob] };
      for (let i = 0; i < BATCH; i++) ids.push(await client.putObject(spec));
    }
    cases.unshift({ size, ids });
  }
  console.log(`put ${SIZES.map(fmtBytes).join(', ')} objects in ${fmtUs(nowUs() - t)}; reading from another process`);
  const input = { socket: store.socket, echo: echo.path, cases };
  const same = await runChild(import.meta.url, input, { cpus: '0' });
  const cross = await runChild(import.meta.url, input, { cpus: '1' });
  await client.close();
  await store.stop();
  await echo.stop();
  tmp.cleanup();

  const rows = [
    { case: 'floor: raw UNIX-socket ping-pong, 64 B (node:net echo)', result: both(same.raw, cross.raw) },
    { case: 'floor: cheapest Trellis request (listNames)', result: both(same.floor, cross.floor) },
  ];
  same.out.forEach((c, i) => {
    const x = cross.out[i];
    const s = fmtBytes(c.size);
    rows.push(
      {
        case: `${s} async get (round trip)`,
        result: both(c.get, x.get),
        target: 'p50 <= 20 µs',
        met: c.get.p50 <= 20 ? (x.get.p50 <= 20 ? 'yes' : 'same CPU only') : 'no',
      },
      { case: `${s} release after get (round trip)`, result: both(c.release, x.release) },
      { case: `${s} getSync (held object)`, result: one(c.sync), target: 'a few µs', met: met(c.sync.p50 <= 5) },
      { case: `${s} getMany x${BATCH}, per object`, result: both(c.many, x.many) },
      { case: `${s} release x${BATCH} after getMany, per object`, result: both(c.releaseMany, x.releaseMany) },
      { case: `${s} first get of the object in the reader (cold)`, result: fmtUs(c.firstUs) },
    );
  });
  const at = (r, size) => r.out.find((c) => c.size === size);
  for (const [label, r] of [
    ['same CPU', same],
    ['cross-CPU', cross],
  ]) {
    const big = at(r, GiB).get.p50;
    const small = at(r, KiB).get.p50;
    rows.push({
      case: `1 GiB vs 1 KiB async get p50, ${label}`,
      result: `${fmtUs(big)} vs ${fmtUs(small)}`,
      ratio: fmtRatio(big / small),
      target: '<= 2x',
      met: met(big / small <= 2),
    });
  }
  rows.push(
    {
      case: '1 GiB vs 1 KiB getSync p50',
      result: `${fmtUs(at(same, GiB).sync.p50)} vs ${fmtUs(at(same, KiB).sync.p50)}`,
      ratio: fmtRatio(at(same, GiB).sync.p50 / at(same, KiB).sync.p50),
    },
    {
      case: 'vs Vineyard get of an 800 KB array (v6d #1880)',
      result: `1 MiB async get p50 ${fmtUs(at(same, MiB).get.p50)} (same CPU)`,
      baseline: '~350 µs (reported, other machine)',
      ratio: `${fmtRatio(350 / at(same, MiB).get.p50)} faster`,
    },
  );
  report('get latency (reader in another process than writer and store)', rows, [
    `async get: ${ASYNC_N} gets per size after 300 warm-up; getSync: ${SYNC_N}; getMany: ${BATCH_N} batches of ${BATCH}`,
    'same CPU: store (and echo server) and reader pinned to CPU 0; cross-CPU: store on CPU 0, reader on CPU 1 (taskset)',
    '256 MiB and 1 GiB batches: 100 Tensor objects over one shared blob (100 distinct objects would not fit in RAM)',
    'cold rows: the first get of each object in this reader; the segment fds came with the hello, so a first get into a segment not mapped here yet maps it (mmap, no fd passing), and V8 is not told of the mapping as memory of its own, so no GC follows (bench/baselines.js has the fresh-process figures)',
  ]);
}

if (isChild) childMain(reader);
else await main();
