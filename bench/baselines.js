/**
 * Trellis side by side with what a job would use otherwise, in the same run:
 *
 *   Python multiprocessing.shared_memory: attach + numpy view of 256 MiB in
 *     another process, then a first read of every page
 *   Redis (ioredis) GET/SET of 1 KiB and 64 MiB, against a redis-server
 *     started here on a free port
 *   fs.readFile of a 256 MiB file from the page cache
 *   worker_threads postMessage of a 256 MiB ArrayBuffer, copied and transferred
 *
 * Ratios are baseline time / Trellis time (or Trellis rate / baseline rate):
 * above 1 means Trellis is faster.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import {
  childMain,
  cpuUs,
  fmtOps,
  fmtRatio,
  fmtUs,
  isChild,
  KiB,
  MiB,
  median,
  nowUs,
  pin,
  ROOT,
  report,
  runChild,
  startRedis,
  startStore,
  stats,
  tempDir,
  trellis,
} from './lib.js';

const BIG = 256 * MiB;
const MID = 64 * MiB;
const SMALL_N = 10_000;
const FRESH = 5;

// ---- Trellis in a fresh process: connect, first get, first read of every page ----

function touchPages(bytes) {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 4096) s += bytes[i];
  return s;
}

async function freshReader({ socket, id, mode }) {
  if (mode === 'handshake') return freshHandshake(socket);
  if (mode === 'import') {
    // The package's main entry (loaders, apache-arrow), for the figure beside the reader's entry.
    const t = nowUs();
    await import(join(ROOT, 'dist/src/index.js'));
    return { mainImportUs: nowUs() - t };
  }
  // GC pauses that start inside connect or the first get (entries carry their own start time).
  const gcs = [];
  const obs = new PerformanceObserver((l) => gcs.push(...l.getEntries()));
  obs.observe({ entryTypes: ['gc'] });
  let t = nowUs();
  // What a reader loads: trellis/client alone.
  const { connect } = await import(join(ROOT, 'dist/src/client/index.js'));
  const importUs = nowUs() - t;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  t = nowUs();
  const client = await connect({ socket, name: 'baselines reader' });
  const connectUs = nowUs() - t;
  t = nowUs();
  const v = await client.get(id);
  const getUs = nowUs() - t;
  const cpu = process.cpuUsage(cpu0);
  const t1 = performance.now();
  // What connect left for later: the request socket is made on the next turn of the event loop.
  t = nowUs();
  await new Promise((r) => setImmediate(r));
  const laterUs = nowUs() - t;
  // Mapping a segment in a fresh process (mmap + external ArrayBuffer), on a memfd of the same size of its own.
  const { native } = await import(join(ROOT, 'dist/src/native.js'));
  const fd = native.memfdCreate('baselines-map-probe', 1024 ** 3);
  t = nowUs();
  native.map(fd, 1024 ** 3, false);
  const mapUs = nowUs() - t;
  native.closeFd(fd);
  await new Promise((r) => setTimeout(r, 20));
  obs.disconnect();
  const gcUs = gcs.filter((e) => e.startTime >= t0 && e.startTime <= t1).reduce((a, e) => a + e.duration * 1000, 0);
  const bytes = new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength);
  t = nowUs();
  touchPages(bytes);
  const touchUs = nowUs() - t;
  await client.release(id);
  const warm = [];
  for (let i = 0; i < 3000; i++) {
    t = nowUs();
    await client.get(id);
    warm.push(nowUs() - t);
    await client.release(id);
  }
  await client.close();
  return {
    importUs,
    connectUs,
    getUs,
    cpuUs: cpu.user + cpu.system,
    laterUs,
    mapUs,
    gcUs,
    touchUs,
    warmGetUs: stats(warm.slice(1000)).p50,
  };
}

/** The hello round trip alone in a fresh process (the store's answer, with its fds): what connect waits for. */
async function freshHandshake(socket) {
  const { native } = await import(join(ROOT, 'dist/src/native.js'));
  const hello = JSON.stringify({ rid: 1, t: 'hello', version: 1, client: 'baselines probe', attach: true });
  const t = nowUs();
  const raw = await native.handshake(socket, hello, 10_000, 10_000);
  const handshakeUs = nowUs() - t;
  native.closeFd(raw.socket);
  for (const fd of raw.fds) native.closeFd(fd);
  return { handshakeUs };
}

// ---- Python multiprocessing.shared_memory ----

const PY_CHILD = `
import json, sys, time
import numpy as np
from multiprocessing import shared_memory, resource_tracker
# SharedMemory() also registers the segment with multiprocessing's resource
# tracker, which starts a tracker process on first use: ~0.05 or ~5 ms here
# (a fork of this process), so a median over few runs jumps between the two.
# Its time is kept apart: attachUs is shm_open + mmap + the numpy view, and
# the API's figure (what a user calling SharedMemory() pays) adds it back.
register = resource_tracker.register
tracker = [0.0]
def timed_register(*args):
    t = time.perf_counter()
    register(*args)
    tracker[0] += time.perf_counter() - t
resource_tracker.register = timed_register
t0 = time.perf_counter()
shm = shared_memory.SharedMemory(name=sys.argv[1])
a = np.ndarray((${BIG},), dtype=np.uint8, buffer=shm.buf)
t1 = time.perf_counter()
int(a[::4096].sum())
t2 = time.perf_counter()
resource_tracker.unregister(shm._name, 'shared_memory')  # 3.11 would unlink it at exit
del a
shm.close()
print(json.dumps({'attachUs': (t1 - t0 - tracker[0]) * 1e6, 'trackerUs': tracker[0] * 1e6, 'touchUs': (t2 - t1) * 1e6}))
`;

const PY_PARENT = `
import json, subprocess, sys
import numpy as np
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(create=True, size=${BIG})
try:
    np.ndarray((${BIG},), dtype=np.uint8, buffer=shm.buf).fill(7)
    runs = [json.loads(subprocess.check_output([sys.executable, '-c', sys.argv[1], shm.name])) for _ in range(${FRESH})]
    print(json.dumps(runs))
finally:
    shm.close()
    shm.unlink()
`;

function pythonSharedMemory() {
  const runs = JSON.parse(execFileSync('python3', ['-c', PY_PARENT, PY_CHILD], { encoding: 'utf8' }));
  return {
    attachUs: median(runs.map((r) => r.attachUs)),
    apiUs: median(runs.map((r) => r.attachUs + r.trackerUs)),
    trackerUs: runs.map((r) => r.trackerUs),
    touchUs: median(runs.map((r) => r.touchUs)),
  };
}

// ---- Redis ----

async function seqOps(n, fn) {
  const t = nowUs();
  for (let i = 0; i < n; i++) await fn(i);
  return n / ((nowUs() - t) / 1e6);
}

async function timed(reps, fn) {
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t = nowUs();
    await fn(i);
    times.push(nowUs() - t);
  }
  return median(times);
}

async function redisVsTrellis(client, storePid, socketClient) {
  const { redis, pid, stop } = await startRedis();
  // Same placement for both servers and the client: one CPU (see lib.js pin).
  pin(pid, '0');
  pin(storePid, '0');
  pin(process.pid, '0');
  const small = Buffer.alloc(KiB, 1);
  const mid = Buffer.alloc(MID, 2);
  const r = {};
  await seqOps(2000, (i) => redis.set(`k${i}`, small)); // warm-up
  await seqOps(2000, (i) => redis.getBuffer(`k${i}`));
  // CPU per operation on each side, to say where a put's time goes (server vs client).
  const cpu = async (serverPid, fn) => {
    const s0 = cpuUs(serverPid);
    const c0 = process.cpuUsage();
    const rate = await fn();
    const c1 = process.cpuUsage(c0);
    return { rate, serverUs: (cpuUs(serverPid) - s0) / SMALL_N, clientUs: (c1.user + c1.system) / SMALL_N };
  };
  const setCpu = await cpu(pid, () => seqOps(SMALL_N, (i) => redis.set(`k${i}`, small)));
  r.redisSet = setCpu.rate;
  r.redisSetCpu = setCpu;
  r.redisGet = await seqOps(SMALL_N, (i) => redis.getBuffer(`k${i}`));
  r.redisSetMid = await timed(3, () => redis.set('big', mid));
  r.redisGetMid = await timed(3, () => redis.getBuffer('big'));

  // put(Buffer) is refused (dtypeOf matches constructors exactly): hand it plain Uint8Array views.
  const smallU8 = new Uint8Array(small.buffer, small.byteOffset, small.length);
  const midU8 = new Uint8Array(mid.buffer, mid.byteOffset, mid.length);
  const ids = [];
  await seqOps(2000, async () => ids.push(await client.put(smallU8))); // warm-up (opens the put ring)
  // The status request at the end takes in what the ring still holds, inside the CPU window but not the rate.
  const measured = (c, out) => async () => {
    const rate = await seqOps(SMALL_N, async () => out.push(await c.put(smallU8)));
    await c.status();
    return rate;
  };
  const putCpu = await cpu(storePid, measured(client, ids));
  r.trellisPut = putCpu.rate;
  r.trellisPutCpu = putCpu;
  r.trellisPutRing = (await client.status()).counters.ringPuts;
  // The same put with the ring off: one round trip each (the path named and persisted puts keep).
  const socketIds = [];
  await seqOps(2000, async () => socketIds.push(await socketClient.put(smallU8)));
  const socketCpu = await cpu(storePid, measured(socketClient, socketIds));
  r.trellisPutSocket = socketCpu.rate;
  r.trellisPutSocketCpu = socketCpu;
  await socketClient.delete(socketIds);
  r.trellisGet = await seqOps(SMALL_N, async (i) => {
    await client.get(ids[i]);
    await client.release(ids[i]);
  });
  await client.delete(ids);
  r.trellisPutMid = await timed(5, async (i) => {
    const id = await client.put(midU8);
    if (i < 4) await client.delete(id);
    else r.midId = id;
  });
  r.trellisGetMid = await timed(5, async () => {
    await client.get(r.midId);
    await client.release(r.midId);
  });
  await client.delete(r.midId);
  pin(process.pid, '0,1');
  await stop();
  return r;
}

// ---- fs.readFile and worker_threads ----

async function readFileBaseline() {
  const { dir, cleanup } = tempDir();
  const file = join(dir, 'big.bin');
  writeFileSync(file, Buffer.alloc(BIG, 3));
  readFileSync(file); // now in the page cache
  const us = await timed(3, () => readFile(file));
  cleanup();
  return us;
}

const WORKER = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => {
  if (m.back) parentPort.postMessage(m, [m.buf]);
  else parentPort.postMessage({ n: m.buf ? m.buf.byteLength : 0 });
});
`;

async function workerBaseline() {
  const w = new Worker(WORKER, { eval: true });
  const ask = (msg, transfer) =>
    new Promise((resolve) => {
      w.once('message', resolve);
      w.postMessage(msg, transfer);
    });
  await ask({});
  const emptyUs = await timed(20, () => ask({}));
  let buf = new ArrayBuffer(BIG);
  new Uint8Array(buf).fill(5);
  const copyUs = await timed(3, () => ask({ buf }));
  const transferUs = await timed(20, async () => {
    buf = (await ask({ buf, back: true }, [buf])).buf;
  });
  await w.terminate();
  return { emptyUs, copyUs, transferUs };
}

/** A baseline that cannot run here (no python3/numpy, no redis-server) becomes n/a, not a crash. */
async function attempt(what, fn) {
  try {
    return await fn();
  } catch (e) {
    console.error(`baseline ${what} unavailable: ${e.message.split('\n')[0]}`);
    return null;
  }
}

async function main() {
  const { connect } = await trellis();
  const store = await startStore({ size: '2G', reserve: true, cpus: '0' });
  const client = await connect({ socket: store.socket, name: 'baselines' });
  await client.fastPath;
  const w = await client.createBlob(BIG);
  w.buffer.fill(7);
  const blob = await w.seal();
  const id = await client.putObject({ typename: 'Tensor', meta: { dtype: 'uint8', shape: [BIG] }, members: [blob] });
  // Fresh readers, interleaved with the diagnostics so load drifts hit them alike: a plain one,
  // one with every function compiled at load (--no-lazy: how much of the first calls is
  // lazy compilation), and the bare hello round trip.
  const readers = [];
  const eager = [];
  const hellos = [];
  const imports = [];
  for (let i = 0; i < FRESH; i++) {
    imports.push(await runChild(import.meta.url, { mode: 'import' }, { cpus: '0' }));
    readers.push(await runChild(import.meta.url, { socket: store.socket, id }, { cpus: '0' }));
    eager.push(await runChild(import.meta.url, { socket: store.socket, id }, { cpus: '0', execArgv: ['--no-lazy'] }));
    hellos.push(await runChild(import.meta.url, { socket: store.socket, mode: 'handshake' }, { cpus: '0' }));
  }
  const tr = {};
  for (const k of Object.keys(readers[0])) tr[k] = median(readers.map((r) => r[k]));
  const eagerUs = median(eager.map((r) => r.connectUs + r.getUs));
  const handshakeUs = median(hellos.map((r) => r.handshakeUs));
  const mainImportUs = median(imports.map((r) => r.mainImportUs));

  const py = await attempt('python shared_memory', pythonSharedMemory);
  const socketClient = await connect({ socket: store.socket, name: 'baselines-socket', putRing: false });
  const rd = await attempt('redis', () => redisVsTrellis(client, store.pid, socketClient));
  await socketClient.close();
  const fileUs = await readFileBaseline();
  const wk = await workerBaseline();
  await client.close();
  await store.stop();

  // ratio = baseline / Trellis for times, Trellis / baseline for rates: > 1 means Trellis is faster.
  const time = (name, trellisUs, label, baseUs, result = fmtUs(trellisUs)) => ({
    case: name,
    result,
    baseline: baseUs === undefined ? `${label}: n/a` : `${label} ${fmtUs(baseUs)}`,
    ratio: baseUs === undefined ? '' : fmtRatio(baseUs / trellisUs),
  });
  const rate = (name, trellisOps, label, baseOps) => ({
    case: name,
    result: trellisOps === undefined ? 'n/a' : fmtOps(trellisOps),
    baseline: baseOps === undefined ? `${label}: n/a` : `${label} ${fmtOps(baseOps)}`,
    ratio: baseOps === undefined ? '' : fmtRatio(trellisOps / baseOps),
  });
  // Where the time goes, printed and kept in RESULTS.md (issue 12's measured reasons).
  const why = [
    `cold start, medians of ${FRESH} fresh processes: import of trellis/client ${fmtUs(tr.importUs)}, of the main entry ${fmtUs(mainImportUs)} (in neither attach figure: Python's numpy import is not in its own), ` +
      `connect ${fmtUs(tr.connectUs)}, first get ${fmtUs(tr.getUs)}; this process's CPU in them ${fmtUs(tr.cpuUs)}, ` +
      `GC pauses that start inside them ${fmtUs(tr.gcUs)}; the hello round trip alone (store answer with fds, fresh process) ${fmtUs(handshakeUs)}; ` +
      `connect + first get with every function compiled at load (--no-lazy) ${fmtUs(eagerUs)}; ` +
      `left for the next event-loop turn (the request socket) ${fmtUs(tr.laterUs)}; mmap + external ArrayBuffer of a 1 GiB segment ${fmtUs(tr.mapUs)}`,
  ];
  if (rd) {
    const f = (c) => `server ${fmtUs(c.serverUs)} + client ${fmtUs(c.clientUs)}`;
    why.push(
      `CPU per 1 KiB op (/proc, 10 ms ticks): Trellis put by ring ${f(rd.trellisPutCpu)}; Trellis put by socket ${f(rd.trellisPutSocketCpu)}; redis SET ${f(rd.redisSetCpu)}`,
      `puts that went by ring in this run: ${rd.trellisPutRing} (the store's count; warm-up included)`,
    );
  }
  for (const w of why) console.log(w);
  const attach = tr.connectUs + tr.getUs;
  const attachText = `connect ${fmtUs(tr.connectUs)} + first get ${fmtUs(tr.getUs)}`;
  report(
    'Trellis vs baselines (ratio > 1 means Trellis is faster)',
    [
      time('256 MiB attach + view in a fresh process', attach, 'py SharedMemory() + numpy', py?.apiUs, attachText),
      time(
        '256 MiB attach + view, against the bare syscalls',
        attach,
        'py shm_open + mmap + numpy',
        py?.attachUs,
        attachText,
      ),
      time('256 MiB first read of every page after attach', tr.touchUs, 'py shared_memory', py?.touchUs),
      time('256 MiB warm get (view) vs attach + view', tr.warmGetUs, 'py shared_memory', py?.attachUs),
      rate('1 KiB put vs SET, sequential', rd?.trellisPut, 'redis SET', rd?.redisSet),
      rate('1 KiB put by socket (ring off) vs SET, sequential', rd?.trellisPutSocket, 'redis SET', rd?.redisSet),
      rate('1 KiB get + release vs GET, sequential', rd?.trellisGet, 'redis GET', rd?.redisGet),
      rd
        ? time('64 MiB put vs SET', rd.trellisPutMid, 'redis SET', rd.redisSetMid)
        : { case: '64 MiB put vs SET', result: 'n/a' },
      rd
        ? time('64 MiB get + release vs GET', rd.trellisGetMid, 'redis GET', rd.redisGetMid)
        : { case: '64 MiB get + release vs GET', result: 'n/a' },
      time('256 MiB warm get (view) vs fs.readFile from page cache', tr.warmGetUs, 'readFile', fileUs),
      time('256 MiB warm get vs worker postMessage (copy)', tr.warmGetUs, 'postMessage copy', wk.copyUs),
      time('256 MiB warm get vs worker postMessage (transfer)', tr.warmGetUs, 'postMessage transfer', wk.transferUs),
    ],
    [
      `fresh-process figures: median of ${FRESH} processes (Trellis and Python alike); warm get: p50 of 2000 after 1000 warm-up, reader and store on CPU 0`,
      'Trellis attach = connect (one hello round trip to the store, whose answer carries the segment, directory and pin-page fds; mmap of directory and pin page) + first get (directory read and pin, mmap of the 1 GiB segment, tensor view); Python attach = shm_open + mmap + numpy view of the named segment (no server involved); both exclude interpreter start and imports',
      `Python's SharedMemory() also registers the segment with the resource tracker, which starts a tracker process (a fork): in the SharedMemory() figure, out of the bare one; it took ${py ? py.trackerUs.map(fmtUs).join(', ') : 'n/a'} in the ${FRESH} processes`,
      'redis rows: redis-server, Trellis store and this client all pinned to CPU 0; Trellis get + release of a 1 KiB tensor takes the fast path (no round trip); put takes the put ring (no round trip; the store drains it), or with the ring off one round trip',
      'redis GET returns a copy in this process; Trellis get returns a read-only view of shared memory',
      `worker rows: round trip to a worker that acks (empty message round trip ${fmtUs(wk.emptyUs)}); the transfer ack carries the buffer back`,
      'Trellis warm get is the reader in another process than the store; the worker and readFile rows stay in one process',
      ...why,
    ],
  );
}

if (isChild) childMain(freshReader);
else await main();
