/**
 * Loader throughput: the Trellis dataset loader (sequential and shuffled, 1
 * and 2 gather workers) against two loaders in the same run that read the
 * same shards from files (fs, pread) and from Redis (ioredis), over
 * Fashion-MNIST (60k x 784 B; the Debian package, else a generated stand-in)
 * and a generated dataset of 2 GiB (CIFAR-shaped rows, 3x32x32 uint8).
 *
 * Every loader hands out batches of 256 and the consumer does the same work
 * on each: it reads one byte per 4 KiB page of the features and the first
 * label, so data that is not really there (an unmapped page, a lazy buffer)
 * costs what it costs. The baselines are written to be fast: one reused batch
 * buffer, synchronous preads (one per batch sequential, one per row
 * shuffled), pipelined GETRANGEs (one round trip per batch), labels read once
 * at open. Each case runs for CAP_MS after its first batch, epoch after
 * epoch; opening (workers forked, shards pre-faulted) is not timed and is
 * reported apart.
 *
 *   node bench/loader.js            (after `npx tsc -p tsconfig.json`)
 */
import { closeSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import {
  cpuUs,
  fmtRatio,
  fmtUs,
  GiB,
  met,
  nowUs,
  ROOT,
  report,
  startRedis,
  startStore,
  tempDir,
  trellis,
} from './lib.js';

const BATCH = 256;
const CAP_MS = Number(process.env.TRELLIS_LOADER_CAP_MS ?? 3000);
const GEN_BYTES = 2 * GiB;
const GEN_SHAPE = [3, 32, 32];
const GEN_SHARD_ROWS = 65_536; // 192 MiB of features per shard
const TARGET_SEQ = 10;
const TARGET_SHUF = 3;

// ---- the consumer's work, the same for every loader ----------------------------

let sink = 0;
function consume(x, y) {
  let s = y[0] | 0;
  for (let i = 0; i < x.length; i += 4096) s += x[i];
  sink ^= s;
}

/**
 * Calls `next` (returns the batch's sample count) for CAP_MS, epoch after
 * epoch; the first batch is not timed. Also counts the CPU time spent meanwhile
 * by this process and by `pids` (a loader's workers and store): on a shared
 * machine a loader of several processes gets several shares of the CPUs, so
 * CPU per batch says what wall-clock rates under load cannot.
 */
async function timeLoop(next, pids = []) {
  let samples = 0;
  await next(); // includes filling the pipeline
  const cpu0 = process.cpuUsage();
  const others0 = pids.map(cpuUs);
  const t0 = nowUs();
  const deadline = t0 + CAP_MS * 1000;
  while (nowUs() < deadline) samples += await next();
  const us = nowUs() - t0;
  const own = process.cpuUsage(cpu0);
  const cpu = own.user + own.system + pids.reduce((sum, pid, i) => sum + cpuUs(pid) - others0[i], 0);
  return { samples, us, cpuUs: cpu };
}

// ---- what the baselines share: epochs of batches, shuffled with the loader's algorithm ----

class Epochs {
  constructor(rows, { shuffle, seed, T }) {
    this.rows = rows;
    this.shuffle = shuffle;
    this.seed = seed;
    this.T = T;
    this.epoch = 0;
    this.pos = 0;
    this.order = shuffle ? T.epochOrder(rows, true, seed, 0) : null;
  }

  /** Positions [start, start + n) of the current epoch for the next batch, moving to a new epoch at the end. */
  take() {
    if (this.pos >= this.rows) {
      this.epoch++;
      this.pos = 0;
      if (this.shuffle) this.order = this.T.epochOrder(this.rows, true, this.seed, this.epoch);
    }
    const start = this.pos;
    const n = Math.min(BATCH, this.rows - start);
    this.pos += n;
    return { start, n };
  }
}

// ---- file loader ----------------------------------------------------------------

/** Shards as files: features and labels of shard i in x<i>.bin / y<i>.bin. */
function writeFiles(dir, shards) {
  shards.forEach((s, i) => {
    for (const [name, data] of [
      [`x${i}.bin`, s.x],
      [`y${i}.bin`, s.y],
    ]) {
      const fd = openSync(join(dir, name), 'w');
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      for (let off = 0; off < bytes.length; off += 64 << 20)
        writeSync(fd, bytes, off, Math.min(64 << 20, bytes.length - off));
      closeSync(fd);
    }
  });
}

class FileLoader {
  constructor(dir, shards, rowBytes, { shuffle, seed, T }) {
    this.rowBytes = rowBytes;
    this.fds = shards.map((_, i) => openSync(join(dir, `x${i}.bin`), 'r'));
    this.starts = [0];
    for (const s of shards) this.starts.push(this.starts.at(-1) + s.rows);
    this.rows = this.starts.at(-1);
    // labels are small: read once at open
    this.labels = new Uint8Array(this.rows);
    shards.forEach((s, i) => {
      const fd = openSync(join(dir, `y${i}.bin`), 'r');
      readSync(fd, this.labels, this.starts[i], s.rows, 0);
      closeSync(fd);
    });
    this.epochs = new Epochs(this.rows, { shuffle, seed, T });
    this.x = new Uint8Array(BATCH * rowBytes);
    this.y = new Uint8Array(BATCH);
  }

  shardOf(r) {
    let i = 0;
    while (r >= this.starts[i + 1]) i++;
    return i;
  }

  next() {
    const { start, n } = this.epochs.take();
    const order = this.epochs.order;
    const rb = this.rowBytes;
    if (!order) {
      // contiguous rows: one pread per shard the batch touches
      let done = 0;
      while (done < n) {
        const r = start + done;
        const s = this.shardOf(r);
        const k = Math.min(n - done, this.starts[s + 1] - r);
        readSync(this.fds[s], this.x, done * rb, k * rb, (r - this.starts[s]) * rb);
        this.y.set(this.labels.subarray(r, r + k), done);
        done += k;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const r = order[start + i];
        const s = this.shardOf(r);
        readSync(this.fds[s], this.x, i * rb, rb, (r - this.starts[s]) * rb);
        this.y[i] = this.labels[r];
      }
    }
    consume(this.x.subarray(0, n * rb), this.y);
    return n;
  }

  close() {
    for (const fd of this.fds) closeSync(fd);
  }
}

// ---- Redis loader ----------------------------------------------------------------

/** Shards as Redis strings `<prefix>:x<i>` / `<prefix>:y<i>`, written in place in 8 MiB pieces. */
async function writeRedis(redis, prefix, shards) {
  const CHUNK = 8 << 20;
  for (const [i, s] of shards.entries()) {
    for (const [key, data] of [
      [`${prefix}:x${i}`, s.x],
      [`${prefix}:y${i}`, s.y],
    ]) {
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      // size the string once (SETRANGE past the end zero-fills), so later pieces do not reallocate it
      await redis.setrange(key, bytes.length - 1, Buffer.from([0]));
      const writes = [];
      for (let off = 0; off < bytes.length; off += CHUNK) {
        writes.push(redis.setrange(key, off, bytes.subarray(off, Math.min(off + CHUNK, bytes.length))));
        if (writes.length === 8) await Promise.all(writes.splice(0));
      }
      await Promise.all(writes);
    }
  }
}

class RedisLoader {
  static async open(redis, prefix, shards, rowBytes, { shuffle, seed, T }) {
    const l = new RedisLoader(redis, prefix, shards, rowBytes, { shuffle, seed, T });
    l.labels = new Uint8Array(l.rows);
    for (let i = 0; i < shards.length; i++) l.labels.set(await redis.getBuffer(`${prefix}:y${i}`), l.starts[i]);
    return l;
  }

  constructor(redis, prefix, shards, rowBytes, { shuffle, seed, T }) {
    this.redis = redis;
    this.prefix = prefix;
    this.rowBytes = rowBytes;
    this.starts = [0];
    for (const s of shards) this.starts.push(this.starts.at(-1) + s.rows);
    this.rows = this.starts.at(-1);
    this.epochs = new Epochs(this.rows, { shuffle, seed, T });
    this.x = new Uint8Array(BATCH * rowBytes);
    this.y = new Uint8Array(BATCH);
  }

  shardOf(r) {
    let i = 0;
    while (r >= this.starts[i + 1]) i++;
    return i;
  }

  async next() {
    const { start, n } = this.epochs.take();
    const order = this.epochs.order;
    const rb = this.rowBytes;
    const p = this.redis.pipeline();
    const at = [];
    if (!order) {
      let done = 0;
      while (done < n) {
        const r = start + done;
        const s = this.shardOf(r);
        const k = Math.min(n - done, this.starts[s + 1] - r);
        const off = (r - this.starts[s]) * rb;
        p.getrangeBuffer(`${this.prefix}:x${s}`, off, off + k * rb - 1);
        at.push(done * rb);
        this.y.set(this.labels.subarray(r, r + k), done);
        done += k;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const r = order[start + i];
        const s = this.shardOf(r);
        const off = (r - this.starts[s]) * rb;
        p.getrangeBuffer(`${this.prefix}:x${s}`, off, off + rb - 1);
        at.push(i * rb);
        this.y[i] = this.labels[r];
      }
    }
    const replies = await p.exec();
    replies.forEach(([err, buf], i) => {
      if (err) throw err;
      this.x.set(buf, at[i]);
    });
    consume(this.x.subarray(0, n * rb), this.y);
    return n;
  }
}

// ---- Trellis loader ---------------------------------------------------------------

async function trellisCase(T, client, name, { shuffle, workers, storePid }) {
  const t = nowUs();
  const loader = await T.openLoader(client, name, { batchSize: BATCH, shuffle, seed: 1, workers, epochs: Infinity });
  const openUs = nowUs() - t;
  const it = loader[Symbol.asyncIterator]();
  const r = await timeLoop(async () => {
    const { value: b } = await it.next();
    consume(b.x.data, b.y.data);
    return b.y.data.length;
  }, [...loader.workerPids, storePid]);
  await loader.close();
  return { ...r, openUs, workers: loader.workerPids.length, groupSize: loader.groupSize, prefetch: loader.prefetch };
}

// ---- the same shuffled case on a huge-page arena ------------------------------------------

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';
const HUGE_STORE = '2600M';

function hugePagesFree() {
  const m = /HugePages_Free:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : 0;
}

/**
 * The shuffled 2 GiB case again, on a second store whose arena is on 2 MiB
 * huge pages (--reserve --huge-pages), against the same-run file loader. The
 * machine has no huge-page pool by default: this reserves one for the
 * duration of the rows (vm.nr_hugepages, needs root) and puts the old value
 * back after, and says so in the rows. TRELLIS_BENCH_HUGE=0 skips them.
 */
async function hugePageRows(T, ds, file) {
  const label = `${ds.label}, shuffled: Trellis loader`;
  if (process.env.TRELLIS_BENCH_HUGE === '0') return [];
  let before;
  try {
    before = Number(readFileSync(NR_HUGEPAGES, 'utf8'));
    const need = Math.ceil(2600 / 2);
    writeFileSync(NR_HUGEPAGES, String(before + need));
    if (hugePagesFree() < need) {
      // free memory is in pieces smaller than 2 MiB: compact it once and ask again
      writeFileSync('/proc/sys/vm/compact_memory', '1');
      writeFileSync(NR_HUGEPAGES, String(before + need));
    }
    if (hugePagesFree() < need) throw new Error(`the kernel gave ${hugePagesFree()} of ${need} huge pages`);
  } catch (e) {
    if (before !== undefined) writeFileSync(NR_HUGEPAGES, String(before));
    return [{ case: `${label}, huge-page arena`, result: `n/a (no huge-page pool: ${e.message})` }];
  }
  const store = await startStore({ size: HUGE_STORE, reserve: true, extraArgs: ['--huge-pages'] });
  const out = [];
  try {
    const client = await T.connect({ socket: store.socket });
    const onHuge = (await client.status()).segments.every((g) => g.hugePages);
    const gen = await generated(T, client);
    for (const workers of [1, 2]) {
      const r = await trellisCase(T, client, gen.name, { shuffle: true, workers, storePid: store.pid });
      const x = rate(r, ds.rowBytes);
      const ratio = x.sps / file.sps;
      out.push({
        case: `${label}, ${workers} worker${workers > 1 ? 's' : ''}, huge-page arena (pool reserved by the bench)`,
        result: `${fmtRate(x)} (${cpuVsFile(x, file)}; open ${fmtUs(r.openUs)}, groups of ${r.groupSize}${onHuge ? '' : '; NOT all segments on huge pages'})`,
        baseline: `file: ${fmtRate(file)}`,
        ratio: fmtRatio(ratio),
        target: `>= ${TARGET_SHUF}x file`,
        met: met(ratio >= TARGET_SHUF),
      });
    }
    await client.close();
  } finally {
    await store.stop();
    writeFileSync(NR_HUGEPAGES, String(before));
  }
  return out;
}

// ---- datasets ------------------------------------------------------------------------

async function fashionMnist(T, client) {
  const { loadFashionMnist } = await import(join(ROOT, 'dist/examples/training/fashion-mnist.js'));
  const fm = loadFashionMnist();
  const input = {
    features: { dtype: 'uint8', shape: [fm.train.count, 28, 28], data: fm.train.images },
    labels: fm.train.labels,
    shards: 4,
  };
  // shards of a multiple of the batch size (15104 rows), as recommended: every sequential batch is a view
  const ds = await T.writeDataset(client, 'bench/fmnist', { ...input, alignRows: BATCH });
  // and the same data in 4 shards of 15000 rows: 3 batches per epoch span two shards and are gathered
  await T.writeDataset(client, 'bench/fmnist-unaligned', input);
  return {
    name: 'bench/fmnist',
    unaligned: 'bench/fmnist-unaligned',
    label: `Fashion-MNIST (${fm.source})`,
    rowBytes: 784,
    ids: ds.shards,
  };
}

/** 2 GiB of rows written straight into arena shards (createShard), distinct rows, labels row % 10. */
async function generated(T, client) {
  const rowBytes = GEN_SHAPE.reduce((a, b) => a * b, 1);
  const rows = Math.floor(GEN_BYTES / rowBytes);
  const pattern = new Uint8Array(4 << 20);
  const next = T.xorshift32(0x9e3779b9);
  for (let i = 0; i < pattern.length; i++) pattern[i] = next() & 0xff;
  const ids = [];
  for (let start = 0; start < rows; start += GEN_SHARD_ROWS) {
    const n = Math.min(GEN_SHARD_ROWS, rows - start);
    const w = await T.createShard(client, { rows: n, sampleShape: GEN_SHAPE, dtype: 'uint8', labelDtype: 'uint8' });
    const x = w.x.data;
    for (let off = 0; off < x.length; off += pattern.length)
      x.set(pattern.subarray(0, Math.min(pattern.length, x.length - off)), off);
    const dv = new DataView(x.buffer, x.byteOffset, x.byteLength);
    for (let r = 0; r < n; r++) dv.setUint32(r * rowBytes, start + r, true);
    for (let r = 0; r < n; r++) w.y.data[r] = (start + r) % 10;
    ids.push(await w.seal());
  }
  await client.createDataset('bench/gen', ids);
  return { name: 'bench/gen', label: `generated 2 GiB (${rows} x 3x32x32)`, rowBytes, ids, huge: true };
}

/** The shards' features and labels as views (for writing files and Redis). */
async function shardArrays(client, ids) {
  const values = await client.getMany(ids);
  return values.map((v) => {
    const [x, y] = v.members;
    return { x: x.data, y: y.data, rows: x.shape[0] };
  });
}

// ---- main ------------------------------------------------------------------------------

const rate = (r, rowBytes) => {
  const sps = r.samples / (r.us / 1e6);
  return { sps, gbps: (sps * (rowBytes + 1)) / 1e9, cpuPerBatch: r.cpuUs / (r.samples / BATCH) };
};
/** The file loader's CPU per batch over this loader's: the comparison load skews least. */
const cpuVsFile = (x, file) => `the file loader spends ${fmtRatio(file.cpuPerBatch / x.cpuPerBatch)} its CPU per batch`;
const fmtRate = (x) =>
  `${x.sps >= 1e6 ? `${(x.sps / 1e6).toFixed(2)}M` : `${(x.sps / 1e3).toFixed(0)}k`} samples/s, ${x.gbps.toFixed(2)} GB/s, CPU ${fmtUs(x.cpuPerBatch)}/batch`;

async function main() {
  const T = await trellis();
  const { dir, cleanup } = tempDir('trellis-bench-loader-');
  const t0 = nowUs();
  const store = await startStore({ size: '2600M', reserve: true });
  const client = await T.connect({ socket: store.socket });
  // Without redis-server (or ioredis) the Redis rows say n/a instead of failing the benchmark.
  const redis = await startRedis().catch((e) => {
    console.error(`Redis baseline skipped: ${e.message}`);
    return null;
  });
  const rows = [];
  const notes = [];
  try {
    const sets = [];
    let t = nowUs();
    sets.push(await fashionMnist(T, client));
    sets.push(await generated(T, client));
    notes.push(`setup: store (2.6 GB, reserved) and both datasets into it ${fmtUs(nowUs() - t)}`);
    for (const ds of sets) {
      const arrays = await shardArrays(client, ds.ids);
      t = nowUs();
      const fdir = join(dir, ds.name.replace('/', '-'));
      mkdirSync(fdir);
      writeFiles(fdir, arrays);
      const fileUs = nowUs() - t;
      t = nowUs();
      if (redis) await writeRedis(redis.redis, ds.name, arrays);
      const redisNote = redis ? `, to Redis in ${fmtUs(nowUs() - t)}` : '';
      notes.push(`${ds.label}: ${arrays.length} shards; written to files in ${fmtUs(fileUs)}${redisNote}`);
      for (const id of ds.ids) await client.release(id);

      const base = {};
      for (const shuffle of [false, true]) {
        const mode = shuffle ? 'shuffled' : 'sequential';
        const file = new FileLoader(fdir, arrays, ds.rowBytes, { shuffle, seed: 1, T });
        base.file = rate(await timeLoop(async () => file.next()), ds.rowBytes);
        file.close();
        base.redis = null;
        if (redis) {
          const rl = await RedisLoader.open(redis.redis, ds.name, arrays, ds.rowBytes, { shuffle, seed: 1, T });
          base.redis = rate(await timeLoop(() => rl.next()), ds.rowBytes);
        }
        rows.push({ case: `${ds.label}, ${mode}: file loader (pread)`, result: fmtRate(base.file) });
        rows.push({
          case: `${ds.label}, ${mode}: Redis loader (GETRANGE)`,
          result: base.redis ? fmtRate(base.redis) : 'n/a (no redis-server)',
        });
        for (const workers of [1, 2]) {
          const r = await trellisCase(T, client, ds.name, { shuffle, workers, storePid: store.pid });
          const x = rate(r, ds.rowBytes);
          const ratio = x.sps / base.file.sps;
          const target = shuffle ? TARGET_SHUF : TARGET_SEQ;
          rows.push({
            case: `${ds.label}, ${mode}: Trellis loader, ${workers} worker${workers > 1 ? 's' : ''}`,
            result: `${fmtRate(x)} (${cpuVsFile(x, base.file)}; ${base.redis ? fmtRatio(x.sps / base.redis.sps) : 'n/a'} Redis; open ${fmtUs(r.openUs)}, ${r.workers} started${shuffle ? `, groups of ${r.groupSize}` : ''})`,
            baseline: `file: ${fmtRate(base.file)}`,
            ratio: fmtRatio(ratio),
            target: `>= ${target}x file`,
            met: met(ratio >= target),
          });
        }
        if (shuffle && ds.huge) rows.push(...(await hugePageRows(T, ds, base.file)));
        if (!shuffle && ds.unaligned) {
          const r = await trellisCase(T, client, ds.unaligned, { shuffle, workers: 2, storePid: store.pid });
          const x = rate(r, ds.rowBytes);
          rows.push({
            case: `${ds.label}, sequential, shards not aligned to the batch: Trellis loader, 2 workers`,
            result: `${fmtRate(x)} (open ${fmtUs(r.openUs)}, ${r.workers} started)`,
            baseline: `file: ${fmtRate(base.file)}`,
            ratio: fmtRatio(x.sps / base.file.sps),
          });
        }
      }
    }
  } finally {
    await client.close();
    await store.stop();
    await redis?.stop();
    cleanup();
  }
  notes.push(
    `batches of ${BATCH}; each case runs ${CAP_MS / 1000} s after its first batch, epoch after epoch; the consumer reads one byte per 4 KiB page and one label per batch`,
    'Trellis sequential: batches inside a shard are views of it (no copy), so no worker is started when shards hold a multiple of the batch size; with unaligned shards the few batches spanning two shards are gathered by the workers',
    'Trellis shuffled: one permutation over all rows per epoch; each worker process gathers a group of consecutive batches (about 8 MiB, at most 16) into one arena blob with one native call per batch, handed over as views; default prefetch (two groups per worker and two on the consumer side)',
    'huge-page rows: the bench reserves a pool of 2 MiB pages for them (vm.nr_hugepages += 1300, after compacting memory if the kernel gives fewer; put back after; needs root) and runs the shuffled 2 GiB case on a second store started with --reserve --huge-pages, against the same file-loader figure; the machine has no pool otherwise, so the rows above are on 4 KiB pages',
    `load average at the end: ${loadavg()[0].toFixed(2)} (2 vCPUs, shared machine: compare ratios; under load a loader of several processes gets several shares of the CPUs, so compare CPU per batch too)`,
    "CPU per batch: user + system time of the consuming process, plus the Trellis loader's workers and store, during the timed run (/proc, 10 ms ticks)",
    'file loader: synchronous pread into one reused buffer (one per batch sequential, one per row shuffled), labels read once; files freshly written, so reads come from the page cache',
    'Redis loader: shards as strings, one pipelined round trip per batch (one GETRANGE per batch sequential, per row shuffled), labels read once',
    `GB/s counts features and labels delivered; whole run ${fmtUs(nowUs() - t0)}`,
  );
  report('loader throughput (Trellis loader vs file and Redis loaders)', rows, notes);
  if (sink === 0.5) console.log(sink);
}

await main();
