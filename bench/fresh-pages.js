/**
 * Fresh pages on this VM: what a first write into a new shared-memory
 * mapping costs, by where its physical pages come from, with the kernel's
 * counters beside each round (issue 12 goal 3: the "first new store"
 * anomaly, where a migration into a new store ran at 0.4-0.5 GB/s and one
 * into a store started right after at ~1.5 GB/s).
 *
 *   each round: a 1 GiB memfd is filled and its pages freed (hole punched,
 *   as a store gives memory back), then after `delay` a new 1 GiB memfd is
 *   filled 2 MiB at a time; /proc/self/pagemap tells, for each 2 MiB, which
 *   physical pages it got: "recycled" (the ones the first memfd just freed)
 *   or "other" (free for longer, or freed by other processes).
 *   last: a 3 GiB memfd right after freeing 1 GiB: the first GiB recycles,
 *   the rest reaches pages that had been free for long.
 *
 * Counters per round (deltas over the fill): /proc/vmstat allocstall_*,
 * pgscan_direct, pgsteal_direct, compact_stall (direct reclaim and
 * compaction: the page cache being squeezed), thp_fault_alloc, and
 * /proc/meminfo MemFree and Shmem before it; /proc/stat steal ticks.
 * The memory cgroup's limit and THP for shmem are printed once.
 *
 * Reading pagemap's physical frame numbers needs root (CI runs as root);
 * without it the classes read "n/a". Run: node --expose-gc bench/fresh-pages.js
 */
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { fmtRate, fmtRatio, GiB, MiB, median, meminfo, nowUs, ROOT, report, vmstat } from './lib.js';

const GROUP = 2 * MiB;
const PAGE = 4096;
const DELAYS = (process.env.FRESH_DELAYS ?? '0,0.5,1,2,3,5,8').split(',').map(Number);
const REPEATS = Number(process.env.FRESH_REPEATS ?? 2);

const { native } = await import(join(ROOT, 'dist/src/native.js'));

const read = (p) => (existsSync(p) ? readFileSync(p, 'utf8').trim() : 'n/a');

/** Physical frame numbers of the pages mapped at [addr, addr + len) (0 where pagemap hides them). */
const pagemap = openSync('/proc/self/pagemap', 'r');
function frames(addr, len) {
  const n = len / PAGE;
  const buf = Buffer.alloc(n * 8);
  readSync(pagemap, buf, 0, buf.length, Number((addr / BigInt(PAGE)) * 8n));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Number(buf.readBigUInt64LE(i * 8) & ((1n << 55n) - 1n));
  return out;
}

/** A new memfd of `size`, mapped. */
function memfd(size) {
  const fd = native.memfdCreate('bench-fresh', size);
  const buffer = native.map(fd, size, true);
  return { fd, buffer, bytes: new Uint8Array(buffer), addr: native.address(buffer) };
}

/** Fills `size` bytes of a new memfd and frees its pages; resolves with the frames it had. */
function fillAndFree(size) {
  const m = memfd(size);
  for (let o = 0; o < size; o += PAGE) m.bytes[o] = 1;
  const had = new Set(frames(m.addr, size));
  had.delete(0);
  native.punchHole(m.fd, 0, size);
  native.closeFd(m.fd);
  return had;
}

/** Fills a new memfd 2 MiB at a time; per class of pages, the bytes and the time spent writing them. */
function fillClassified(size, recycledFrames) {
  const m = memfd(size);
  const classes = { recycled: { bytes: 0, us: 0 }, other: { bytes: 0, us: 0 } };
  let slowBytes = 0;
  const t0 = nowUs();
  let writeUs = 0;
  for (let o = 0; o < size; o += GROUP) {
    const t = nowUs();
    for (let p = o; p < o + GROUP; p += PAGE) m.bytes[p] = 2;
    const us = nowUs() - t;
    writeUs += us;
    const f = frames(m.addr + BigInt(o), GROUP);
    let mine = 0;
    for (const x of f) if (recycledFrames.has(x)) mine++;
    const c = mine * 2 > f.length ? classes.recycled : classes.other;
    c.bytes += GROUP;
    c.us += us;
    // Slower than 1 GB/s: far below what this machine writes into pages it has backed.
    if (GROUP / us < 1000) slowBytes += GROUP;
  }
  const wallUs = nowUs() - t0;
  native.punchHole(m.fd, 0, size);
  native.closeFd(m.fd);
  return { classes, slowBytes, writeUs, wallUs };
}

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
const rate = (c) => (c.bytes ? `${fmtRate(c.bytes, c.us)} over ${c.bytes / MiB} MiB` : '-');

async function round(delay, size = GiB) {
  const had = fillAndFree(GiB);
  globalThis.gc?.();
  await sleep(delay);
  const mem = meminfo();
  const v0 = vmstat();
  const r = fillClassified(size, had);
  const v1 = vmstat();
  const d = {};
  for (const k of Object.keys(v0)) d[k] = v1[k] - v0[k];
  return { delay, size, mem, d, ...r };
}

/** A row: the fill's rate; the recycled pages' share and rate; the other pages' rate as a ratio of the recycled ones'. */
function classRow(name, result, recycled, other, slowBytes) {
  const all = recycled.bytes + other.bytes;
  const share = all ? Math.round((100 * recycled.bytes) / all) : 0;
  return {
    case: name,
    result: `${result}; ${Math.round(slowBytes / MiB)} MiB at < 1 GB/s`,
    baseline: `recycled ${share}%: ${rate(recycled)}; other: ${rate(other)}`,
    ratio: recycled.bytes && other.bytes ? fmtRatio(other.bytes / other.us / (recycled.bytes / recycled.us)) : '',
  };
}

async function main() {
  if (process.getuid?.() !== 0)
    console.log('(not root: pagemap shows no frame numbers, so every page counts as other)');
  const rounds = [];
  const order = [];
  for (let i = 0; i < REPEATS; i++) order.push(...DELAYS);
  for (const delay of order) rounds.push(await round(delay));
  const long = await round(0, 3 * GiB);
  closeSync(pagemap);

  const rows = [];
  for (const delay of DELAYS) {
    const mine = rounds.filter((r) => r.delay === delay);
    const sum = (k) => {
      const c = { bytes: 0, us: 0 };
      for (const r of mine) {
        c.bytes += r.classes[k].bytes;
        c.us += r.classes[k].us;
      }
      return c;
    };
    rows.push(
      classRow(
        `fill a new 1 GiB memfd ${delay} s after freeing 1 GiB (${mine.length} rounds)`,
        fmtRate(GiB, median(mine.map((r) => r.writeUs))),
        sum('recycled'),
        sum('other'),
        median(mine.map((r) => r.slowBytes)),
      ),
    );
  }
  rows.push(
    classRow(
      'fill a new 3 GiB memfd right after freeing 1 GiB',
      fmtRate(long.size, long.writeUs),
      long.classes.recycled,
      long.classes.other,
      long.slowBytes,
    ),
  );
  const counters = (r) =>
    `${r.delay} s: ${fmtRate(r.size, r.writeUs)}, MemFree ${r.mem.MemFree} MiB, Shmem ${r.mem.Shmem} MiB, Cached ${r.mem.Cached} MiB; ` +
    Object.entries(r.d)
      .map(([k, v]) => `${k} +${v}`)
      .join(', ');
  report('fresh-pages: the first write into new shared memory, by where its pages come from', rows, [
    `THP for shmem: ${read('/sys/kernel/mm/transparent_hugepage/shmem_enabled')}; memory cgroup limit: ${read('/sys/fs/cgroup/memory/memory.limit_in_bytes')}; free page reporting order: ${read('/sys/module/page_reporting/parameters/page_reporting_order')}`,
    "recycled: 2 MiB groups whose physical pages are mostly ones the 1 GiB freed just before held; other: the rest; ratio: other pages' write rate / recycled pages' (rounds of a delay pooled). result: the whole fill (median of rounds)",
    ...rounds.map(counters),
    `3 GiB: ${counters(long)}`,
    `load average at the end: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
  ]);
}

await main();
