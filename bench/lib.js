/**
 * Shared helpers for the benchmarks: timers and percentiles, etcd and Redis (the project's starters),
 * temp dirs, a store in a child process, child benchmark processes, and
 * reporting (printed, and written as JSON for run-all when asked).
 *
 * Every child process and temp dir made here is tracked and removed on exit,
 * also on Ctrl-C.
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = join(ROOT, 'bin/trellis.js');
export const KiB = 1024;
export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;

// ---- time -------------------------------------------------------------------

/** Monotonic time in microseconds (fractional). */
export function nowUs() {
  return Number(process.hrtime.bigint()) / 1000;
}

/** p50/p99/mean/min/max of a list of samples (any unit). */
export function stats(samples) {
  const s = Float64Array.from(samples).sort();
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  let sum = 0;
  for (const x of s) sum += x;
  return { n: s.length, p50: at(0.5), p99: at(0.99), mean: sum / s.length, min: s[0], max: s[s.length - 1] };
}

/** CPU time (user + system) a process has used so far, in microseconds, from /proc (10 ms ticks). */
export function cpuUs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at state: utime and stime are 14 and 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / 100;
}

/** Median of a few samples. */
export function median(samples) {
  return stats(samples).p50;
}

/** Runs `fn` with at most `width` calls in flight until `total` calls have finished. */
export async function inFlight(width, total, fn) {
  let next = 0;
  const lane = async () => {
    while (next < total) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(width, total) }, lane));
}

// ---- formatting -------------------------------------------------------------

export function fmtUs(us) {
  if (us >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (us >= 1e3) return `${(us / 1e3).toFixed(us >= 1e5 ? 0 : 2)} ms`;
  if (us >= 100) return `${us.toFixed(0)} µs`;
  return `${us.toFixed(us >= 10 ? 1 : 2)} µs`;
}

export function fmtBytes(n) {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  return `${n} B`;
}

/** Bytes moved in `us` microseconds, as GB/s (10^9). */
export function fmtRate(bytes, us) {
  return `${(bytes / us / 1e3).toFixed(2)} GB/s`;
}

export function fmtOps(ops) {
  return ops >= 1e4 ? `${(ops / 1e3).toFixed(1)}k ops/s` : `${ops.toFixed(0)} ops/s`;
}

export function fmtRatio(x) {
  return x >= 100 ? `${x.toFixed(0)}x` : x >= 10 ? `${x.toFixed(1)}x` : `${x.toFixed(2)}x`;
}

/** Prints rows of strings as an aligned text table. */
export function printTable(header, rows) {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => String(r[i] ?? '').length)));
  const line = (r) => r.map((c, i) => String(c ?? '').padEnd(w[i])).join('  ');
  console.log(line(header));
  console.log(w.map((n) => '-'.repeat(n)).join('  '));
  for (const r of rows) console.log(line(r));
}

// ---- reporting ----------------------------------------------------------------

export const COLUMNS = ['case', 'result', 'baseline', 'ratio', 'target', 'met'];

/** 'yes' / 'no' for a target check; benchmarks print, they never fail on time. */
export function met(ok) {
  return ok ? 'yes' : 'no';
}

/**
 * Prints a benchmark's result rows and, under run-all, writes them as JSON.
 * A row: { case, result, baseline?, ratio?, target?, met? } — all strings, already formatted.
 */
export function report(bench, rows, notes = []) {
  console.log(`\n== ${bench} ==`);
  printTable(
    COLUMNS,
    rows.map((r) => COLUMNS.map((c) => r[c] ?? '')),
  );
  for (const n of notes) console.log(`  * ${n}`);
  const out = process.env.TRELLIS_BENCH_OUT;
  if (out) writeFileSync(out, JSON.stringify({ bench, rows, notes }));
}

// ---- the kernel's memory counters ----------------------------------------------

const VMSTAT = [
  'allocstall_normal',
  'allocstall_movable',
  'pgscan_direct',
  'pgsteal_direct',
  'compact_stall',
  'thp_fault_alloc',
];

/**
 * The /proc/vmstat counters that move when allocations must reclaim or
 * compact (page cache squeezed out, direct reclaim), THP faults, and the
 * CPUs' steal ticks (/proc/stat); diff two calls around a case.
 */
export function vmstat() {
  const out = {};
  for (const line of readFileSync('/proc/vmstat', 'utf8').split('\n')) {
    const [k, v] = line.split(' ');
    if (VMSTAT.includes(k)) out[k] = Number(v);
  }
  out.steal = Number(readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/)[8]);
  return out;
}

/** MemFree, Shmem and Cached from /proc/meminfo, in MiB. */
export function meminfo() {
  const out = {};
  for (const line of readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^(MemFree|Shmem|Cached):\s+(\d+)/.exec(line);
    if (m) out[m[1]] = Math.round(Number(m[2]) / 1024);
  }
  return out;
}

/** `after - before` of two vmstat() readings, as 'k +n' for the counters that moved (or 'none moved'). */
export function vmstatDelta(before, after) {
  const moved = Object.keys(before)
    .filter((k) => after[k] !== before[k])
    .map((k) => `${k} +${after[k] - before[k]}`);
  return moved.length ? moved.join(', ') : 'none moved';
}

// ---- processes and files ------------------------------------------------------

const children = new Set();
const dirs = new Set();

function cleanupAll() {
  // SIGTERM, not SIGKILL: a child benchmark then stops its own store and removes its own files.
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.once('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    cleanupAll();
    process.exit(130);
  });
}

/**
 * Pins a process (all its threads) to CPUs, e.g. '0' or '0,1'. On this 2-vCPU
 * VM a round trip between processes on different CPUs pays two cross-CPU
 * wake-ups (~35-50 µs) against ~14 µs on one CPU, so latency figures name
 * their placement instead of landing on either mode at random.
 */
export function pin(pid, cpus) {
  execFileSync('taskset', ['-a', '-c', '-p', cpus, String(pid)], { stdio: 'ignore' });
}

/** Spawns a tracked child process (killed on exit if still running). */
export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** A temp dir removed on exit (or earlier with the returned cleanup). */
export function tempDir(prefix = 'trellis-bench-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return {
    dir,
    cleanup: () => {
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
}

/**
 * Waits until a child prints `marker` on stdout or stderr; a function marker
 * is asked of everything printed so far (readyLine for `trellis` daemons).
 */
export function waitForOutput(child, marker, what, timeoutMs = 60_000) {
  const found = typeof marker === 'function' ? marker : (out) => out.includes(marker);
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => {
      out += d;
      if (found(out)) {
        clearTimeout(timer);
        resolve(out);
      }
    };
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${out}`)), timeoutMs);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${out}`));
    });
  });
}

/** Stops a child by its pid with SIGTERM (SIGKILL after 10 s) and waits for it. */
export function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Whether a `trellis store` or `agent` has logged its JSON ready line (docs/OPERATIONS.md, "Logs"). */
async function readyLine() {
  const { findLogLine } = await import(join(ROOT, 'dist/src/observe/log-lines.js'));
  return (out) => findLogLine(out, 'ready') !== undefined;
}

/**
 * Runs `trellis store` in a child process (so every client we measure talks to
 * another process). size as the CLI takes it (e.g. '2G'); reserve pre-faults.
 */
export async function startStore({ size, reserve = false, segmentSize, cpus, extraArgs = [] } = {}) {
  const { dir, cleanup } = tempDir();
  const socket = join(dir, 'store.sock');
  const args = [CLI, 'store', '--socket', socket, '--size', size];
  if (reserve) args.push('--reserve');
  if (segmentSize) args.push('--segment-size', segmentSize);
  args.push(...extraArgs);
  const started = nowUs();
  const child = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  await waitForOutput(child, await readyLine(), 'trellis store');
  const startUs = nowUs() - started;
  if (cpus) pin(child.pid, cpus);
  return {
    socket,
    pid: child.pid,
    startUs,
    stop: async () => {
      await stopChild(child);
      cleanup();
    },
  };
}

/**
 * Stores on 127.0.0.1, .2, ... (one per host), named node0, node1, ...,
 * registered in `etcd` under a fresh prefix, serving RPC with one new token;
 * `token` is that token (give it to processes that reach the stores over RPC).
 */
export async function startClusterStores(etcd, hosts, size = '512M') {
  const { dir } = tempDir('trellis-bench-cluster-');
  const token = `${randomUUID()}${randomUUID()}`;
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, token, { mode: 0o600 });
  const metaPrefix = `/bench-${randomUUID()}`;
  const stores = await Promise.all(
    hosts.map((host, i) =>
      startStore({
        size,
        extraArgs: [
          ...['--name', `node${i}`, '--meta', `etcd://${etcd.endpoint}`, '--meta-prefix', metaPrefix],
          ...['--rpc-host', host, '--rpc-port', '0', '--token-file', tokenFile],
        ],
      }),
    ),
  );
  return { stores, token };
}

/**
 * Runs `trellis agent` for a store in a child process (bench/handlers as its
 * handlers) and resolves once it is ready; stop it with stopChild.
 */
export async function startAgent({ socket, redis, prefix, concurrency }) {
  const args = [CLI, 'agent', '--socket', socket, '--redis', redis, '--prefix', prefix];
  args.push('--handlers', join(ROOT, 'bench/handlers'));
  if (concurrency !== undefined) args.push('--concurrency', String(concurrency));
  const child = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  await waitForOutput(child, await readyLine(), 'trellis agent');
  return child;
}

/**
 * Runs this benchmark file again as a child (`node file --child ...`) and
 * resolves with the one message it sends back with process.send.
 */
export function runChild(file, input, { execArgv = [], cpus } = {}) {
  const child = track(
    fork(fileURLToPath(file), ['--child'], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  if (cpus) pin(child.pid, cpus);
  return new Promise((resolve, reject) => {
    let result;
    child.once('message', (m) => {
      result = m;
    });
    child.once('exit', (code) => {
      if (code === 0 && result !== undefined) resolve(result);
      else reject(new Error(`${fileURLToPath(file)} child exited with ${code}`));
    });
    child.send(input);
  });
}

/** In a child made by runChild: receive the input, run `fn`, send its result back, exit. */
export function childMain(fn) {
  process.once('message', async (input) => {
    try {
      const out = await fn(input);
      process.send(out, () => process.exit(0));
    } catch (e) {
      console.error(e);
      process.exit(1);
    }
  });
}

export const isChild = process.argv.includes('--child');

/**
 * Forks benchmark file `file` (an import.meta.url) as a long-lived child with
 * `--role=ROLE` (env.ROLE) that answers commands: `ask(cmd, args)` resolves
 * with its answer, `ready` once it has started; stop() sends SIGTERM.
 */
export function startRole(file, env, { execArgv = [] } = {}) {
  const child = track(
    fork(fileURLToPath(file), [`--role=${env.ROLE}`], {
      env: { ...process.env, ...env },
      execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  let rid = 0;
  const waiting = new Map();
  child.on('message', (m) => {
    const w = waiting.get(m.rid);
    if (!w) return;
    waiting.delete(m.rid);
    if (m.ok) w.resolve(m);
    else w.reject(new Error(`${env.ROLE}: ${m.error}`));
  });
  const ready = new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (code) => reject(new Error(`${env.ROLE} exited with ${code}`)));
  });
  return {
    child,
    ready,
    ask: (cmd, args = {}) =>
      new Promise((resolve, reject) => {
        rid++;
        waiting.set(rid, { resolve, reject });
        child.send({ rid, cmd, ...args });
      }),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * In a child made by startRole: answers the parent's {rid, cmd, ...} messages
 * with {rid, ok | error, ...}. Each command starts and ends with a collection
 * when the child runs with --expose-gc, so none pays for another's garbage.
 */
export function serveParent(handlers) {
  process.on('message', async (m) => {
    try {
      globalThis.gc?.();
      const out = await handlers[m.cmd](m);
      globalThis.gc?.();
      process.send({ rid: m.rid, ok: true, ...out });
    } catch (e) {
      process.send({ rid: m.rid, ok: false, error: `${e?.code ?? ''} ${e?.message ?? e}` });
    }
  });
  process.send({ ready: true });
}

/** Loads the built package, all three entry points in one namespace (run `npx tsc -p tsconfig.json` first). */
export async function trellis() {
  try {
    const parts = await Promise.all(
      ['index.js', 'models/index.js', 'store/index.js'].map((p) => import(join(ROOT, 'dist/src', p))),
    );
    return Object.assign({}, ...parts);
  } catch (e) {
    throw new Error(`cannot load dist/src/index.js; run \`npx tsc -p tsconfig.json\` first (${e.message})`);
  }
}

/** etcd on free ports with a temp data dir: the project's one starter (src/meta/etcd-server.ts). */
export async function startEtcd() {
  const { startEtcdServer } = await import(join(ROOT, 'dist/src/meta/etcd-server.js'));
  return startEtcdServer();
}

/**
 * A redis-server on a free port with a temp dir and no persistence (the
 * project's one starter, src/jobs/redis-server.ts, with AOF off), and an
 * ioredis client to it; stop() disconnects, stops the server by pid and
 * removes the dir. Rejects when redis-server is not installed.
 */
export async function startRedis() {
  const { default: Redis } = await import('ioredis');
  const { startRedisServer } = await import(join(ROOT, 'dist/src/jobs/redis-server.js'));
  const server = await startRedisServer({ appendonly: false });
  const pid = server.pid();
  const onExit = () => {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  };
  process.once('exit', onExit);
  const redis = new Redis({ port: server.port, host: server.host, lazyConnect: true });
  await redis.connect();
  return {
    redis,
    pid,
    stop: async () => {
      redis.disconnect();
      process.off('exit', onExit);
      await server.stop();
    },
  };
}
