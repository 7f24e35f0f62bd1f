/**
 * Gradient exchange per training step among ranks in separate processes, each
 * beside its own store (127.0.0.1/2/3, one etcd), three ways in the same run
 * over the same processes and the same algorithm (reduce-scatter, then
 * all-gather: rank r sums chunk r of everyone's gradients in rank order, then
 * everyone reads everyone's summed chunk):
 *
 *   stores: StoreCollective.allReduce (src/collective/): each rank writes its
 *     gradients into its arena and seals them under a tag; peers read their
 *     chunk over RPC with reads parked in the store until the tag is bound
 *   Redis: each rank SETs its gradients, RPUSHes a token per peer; each peer
 *     BLPOPs it, GETRANGEs its chunk, SETs its sum, and so on
 *   raw TCP: a socket per pair of ranks, chunks written straight from the
 *     buffer and read with net's `onread` straight into where they go
 *
 * plus the algorithm chosen against the other one ('reduce': rank 0 sums the
 * whole buffers, the others read the sum) for 2 and 3 ranks, at the MLP's
 * size (235,146 floats, 0.94 MB) and at 8 MB. Each figure is the median of
 * ROUNDS rounds of STEPS steps after a warm-up; every round runs every way
 * back to back. steps/s is the slowest rank's; MB/s is gradient bytes
 * reduced per second (size × steps/s).
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import {
  fmtRatio,
  fmtUs,
  median,
  met,
  nowUs,
  ROOT,
  report,
  serveParent,
  startEtcd,
  startRedis,
  startRole,
  startStore,
  tempDir,
} from './lib.js';

const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const MLP = 235_146;
const BIG = 2 * 1024 * 1024; // 8 MiB of float32
const ROUNDS = 9;
const STEPS = { [MLP]: 80, [BIG]: 12 };
const WARMUP = 10;
const role = process.argv.find((a) => a.startsWith('--role='))?.slice(7);

// ---- a rank process -------------------------------------------------------------

/** Chunk bounds as StoreCollective computes them (16-float aligned). */
function chunkOf(size, ranks, k) {
  const per = Math.ceil(size / ranks / 16) * 16;
  return [Math.min(k * per, size), Math.min((k + 1) * per, size)];
}

function fill(g, rank, step) {
  for (let i = 0; i < g.length; i += 97) g[i] = rank + step;
}

/** The rank-order sum of chunk `lo..hi` from `sources` (index = rank) into `out`. */
function reduce(out, sources) {
  out.set(sources[0]);
  for (let k = 1; k < sources.length; k++) {
    const src = sources[k];
    for (let i = 0; i < out.length; i++) out[i] += src[i];
  }
}

/**
 * The receiving end of one TCP link: bytes land straight in the destination
 * posted with `into` (net's onread), or, when they arrive before it is posted,
 * in a scratch buffer and are copied when it is.
 */
class Link {
  constructor(socket) {
    this.socket = socket;
    this.targets = [];
    this.early = [];
  }

  static onread(getLink) {
    const scratch = Buffer.allocUnsafe(256 * 1024);
    return {
      buffer: () => getLink()?.nextBuffer() ?? scratch,
      callback: (n, buf) => {
        const link = getLink();
        if (buf === scratch) link.push(Buffer.from(scratch.subarray(0, n)));
        else link.landed(n);
        return true;
      },
    };
  }

  /** Resolves once `dst` is full. */
  into(dst) {
    return new Promise((resolve) => {
      this.targets.push({ dst, pos: 0, resolve });
      if (this.targets.length === 1) this.drainEarly();
    });
  }

  nextBuffer() {
    const t = this.targets[0];
    if (!t || this.early.length > 0) return null;
    return t.dst.subarray(t.pos);
  }

  landed(n) {
    const t = this.targets[0];
    t.pos += n;
    if (t.pos === t.dst.length) this.finish();
  }

  push(chunk) {
    this.early.push(chunk);
    this.drainEarly();
  }

  drainEarly() {
    while (this.early.length > 0 && this.targets.length > 0) {
      const t = this.targets[0];
      const c = this.early[0];
      const n = Math.min(c.length, t.dst.length - t.pos);
      t.dst.set(c.subarray(0, n), t.pos);
      t.pos += n;
      if (n === c.length) this.early.shift();
      else this.early[0] = c.subarray(n);
      if (t.pos === t.dst.length) this.finish();
    }
  }

  finish() {
    this.targets.shift().resolve();
    if (this.targets.length > 0) this.drainEarly();
  }
}

async function rankMain() {
  const dist = (p) => import(join(ROOT, 'dist/src', p));
  const { connect } = await dist('index.js');
  const { StoreCollective } = await dist('collective/index.js');
  const { default: Redis } = await import('ioredis');
  const rank = Number(process.env.RANK);
  const host = HOSTS[rank];
  const client = await connect({ socket: process.env.SOCKET });
  const server = createServer();
  const accepted = new Map(); // peer rank -> socket we write to
  server.on('connection', (s) => {
    s.setNoDelay(true);
    s.once('data', (b) => accepted.set(b[0], s));
  });
  await new Promise((resolve) => server.listen(0, host, resolve));
  let redis = null;
  let blocking = null;
  const links = new Map(); // peer rank -> Link we read from

  /** Runs `steps` steps of `fn` after WARMUP; answers the elapsed µs of the measured ones. */
  async function timed(steps, fn) {
    for (let s = 0; s < WARMUP; s++) await fn(s);
    const t0 = nowUs();
    for (let s = WARMUP; s < WARMUP + steps; s++) await fn(s);
    return nowUs() - t0;
  }

  serveParent({
    hello: () => ({ instance: String(client.instanceId), port: server.address().port }),
    /** The cost of one hop to this rank's store and back: IPC round trips of a status request. */
    ping: async () => {
      const samples = [];
      for (let i = 0; i < 200; i++) {
        const t0 = nowUs();
        await client.status();
        samples.push(nowUs() - t0);
      }
      return { p50: median(samples) };
    },
    setup: async ({ ports, redisPort }) => {
      redis = new Redis({ port: redisPort, host: '127.0.0.1', lazyConnect: true });
      blocking = new Redis({ port: redisPort, host: '127.0.0.1', lazyConnect: true });
      await Promise.all([redis.connect(), blocking.connect()]);
      // A link from every peer: we connect out (reading with onread) and say who we are.
      await Promise.all(
        ports.map((port, k) => {
          if (k === rank) return null;
          return new Promise((resolve) => {
            let link = null;
            const s = netConnect({
              host: HOSTS[k],
              port,
              localAddress: host,
              onread: Link.onread(() => link),
            });
            link = new Link(s);
            s.setNoDelay(true);
            s.once('connect', () => {
              s.write(Buffer.from([rank]));
              links.set(k, link);
              resolve();
            });
          });
        }),
      );
      while (accepted.size < ports.length - 1) await new Promise((r) => setTimeout(r, 5));
      return {};
    },
    stores: async ({ spec, steps, algorithm }) => {
      const c = await StoreCollective.open(client, { ...spec, rank }, { algorithm });
      const g = new Float32Array(spec.size);
      const sum = { writeMs: 0, waitMs: 0, transferMs: 0, reduceMs: 0 };
      let counting = false;
      const us = await timed(steps, async (s) => {
        counting = s >= WARMUP;
        fill(g, rank, s);
        const t = await c.allReduce(s, g);
        if (counting) for (const k of Object.keys(sum)) sum[k] += t[k];
      });
      await c.close();
      return { us, split: sum };
    },
    redis: async ({ spec, steps, run, algorithm }) => {
      const { ranks, size } = spec;
      const g = new Float32Array(size);
      const key = (what, s, r) => `${run}:${what}:${s}:${r}`;
      const bytes = (a, start, end) => Buffer.from(a.buffer, a.byteOffset + start * 4, (end - start) * 4);
      const f32 = (b) => new Float32Array(b.buffer, b.byteOffset, b.length / 4);
      const others = [...Array(ranks).keys()].filter((k) => k !== rank);
      /** SETs a value and pushes a token to each reader; drops this rank's keys of two steps ago. */
      const publish = (what, s, value, readers) => {
        const m = redis.multi().set(key(what, s, rank), value);
        for (const k of readers) m.rpush(key(`${what}-ready`, s, `${rank}>${k}`), '1');
        if (s >= 2) m.unlink(key('g', s - 2, rank), key('r', s - 2, rank));
        return m.exec();
      };
      const waitFor = async (what, s, writers) => {
        for (const k of writers) await blocking.blpop(key(`${what}-ready`, s, `${k}>${rank}`), 0);
      };
      const values = async (cmds) =>
        (await cmds.exec()).map(([err, b]) => {
          if (err) throw err;
          return b;
        });
      const reduceScatter = async (s) => {
        const [lo, hi] = chunkOf(size, ranks, rank);
        await publish('g', s, bytes(g, 0, size), others);
        await waitFor('g', s, others);
        const p = redis.pipeline();
        for (const k of others) p.getrangeBuffer(key('g', s, k), lo * 4, hi * 4 - 1);
        const got = (await values(p)).map(f32);
        const sources = [];
        for (let k = 0, j = 0; k < ranks; k++) sources.push(k === rank ? g.subarray(lo, hi) : got[j++]);
        const out = new Float32Array(hi - lo);
        reduce(out, sources);
        g.set(out, lo);
        await publish('r', s, bytes(out, 0, out.length), others);
        await waitFor('r', s, others);
        const q = redis.pipeline();
        for (const k of others) q.getBuffer(key('r', s, k));
        (await values(q)).forEach((b, j) => {
          g.set(f32(b), chunkOf(size, ranks, others[j])[0]);
        });
      };
      const reduceAtRoot = async (s) => {
        if (rank !== 0) {
          await publish('g', s, bytes(g, 0, size), [0]);
          await waitFor('r', s, [0]);
          g.set(f32(await redis.getBuffer(key('r', s, 0))));
          return;
        }
        await waitFor('g', s, others);
        const p = redis.pipeline();
        for (const k of others) p.getBuffer(key('g', s, k));
        const got = (await values(p)).map(f32);
        const out = new Float32Array(size);
        reduce(out, [g, ...got]);
        g.set(out);
        await publish('r', s, bytes(out, 0, size), others);
      };
      const us = await timed(steps, async (s) => {
        fill(g, rank, s);
        await (algorithm === 'reduce' ? reduceAtRoot(s) : reduceScatter(s));
      });
      return { us };
    },
    tcp: async ({ spec, steps, algorithm }) => {
      const { ranks, size } = spec;
      const g = new Float32Array(size);
      const view = (a, start, end) => new Uint8Array(a.buffer, a.byteOffset + start * 4, (end - start) * 4);
      const others = [...Array(ranks).keys()].filter((k) => k !== rank);
      const [lo, hi] = chunkOf(size, ranks, rank);
      const len = hi - lo;
      const scratch = new Float32Array((ranks - 1) * (algorithm === 'reduce' ? size : len));
      const slot = (j, n) => scratch.subarray(j * n, (j + 1) * n);
      const reduceScatter = async () => {
        const rs = [];
        const ag = [];
        others.forEach((k, j) => {
          const link = links.get(k);
          rs.push(link.into(view(slot(j, len), 0, len)));
          const [klo, khi] = chunkOf(size, ranks, k);
          ag.push(link.into(view(g, klo, khi)));
          // Chunk k of our gradients to rank k, straight from the buffer.
          accepted.get(k).write(view(g, klo, khi));
        });
        await Promise.all(rs);
        const sources = [];
        for (let k = 0, j = 0; k < ranks; k++) sources.push(k === rank ? g.subarray(lo, hi) : slot(j++, len));
        const out = new Float32Array(len);
        reduce(out, sources);
        g.set(out, lo);
        for (const k of others) accepted.get(k).write(view(out, 0, len));
        await Promise.all(ag);
      };
      const reduceAtRoot = async () => {
        if (rank !== 0) {
          const back = links.get(0).into(view(g, 0, size));
          // No copy: the sum can only come back once rank 0 has all of these bytes.
          accepted.get(0).write(view(g, 0, size));
          await back;
          return;
        }
        await Promise.all(others.map((k, j) => links.get(k).into(view(slot(j, size), 0, size))));
        const out = new Float32Array(size);
        reduce(out, [g, ...others.map((_, j) => slot(j, size))]);
        g.set(out);
        for (const k of others) accepted.get(k).write(view(out, 0, size));
      };
      const us = await timed(steps, async (s) => {
        fill(g, rank, s);
        await (algorithm === 'reduce' ? reduceAtRoot() : reduceScatter());
      });
      return { us };
    },
  });
}

// ---- the parent -------------------------------------------------------------------

async function main() {
  const etcd = await startEtcd();
  const { dir } = tempDir('trellis-bench-gx-');
  const token = `${randomUUID()}${randomUUID()}`;
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, token, { mode: 0o600 });
  const prefix = `/trellis-bench/${randomUUID()}`;
  const stores = await Promise.all(
    HOSTS.map((host, i) =>
      startStore({
        size: '512M',
        extraArgs: [
          ...['--name', `node${i}`, '--meta', etcd.url, '--meta-prefix', prefix],
          ...['--rpc-host', host, '--rpc-port', '0', '--token-file', tokenFile],
        ],
      }),
    ),
  );
  const redisServer = await startRedis();
  const redisPort = redisServer.redis.options.port;
  const ranks = HOSTS.map((_, r) =>
    startRole(import.meta.url, { ROLE: 'rank', RANK: String(r), SOCKET: stores[r].socket, TRELLIS_TOKEN: token }),
  );
  await Promise.all(ranks.map((r) => r.ready));
  const hellos = await Promise.all(ranks.map((r) => r.ask('hello')));
  const ports = hellos.map((h) => h.port);
  await Promise.all(ranks.map((r) => r.ask('setup', { ports, redisPort })));

  /** One round of one way for the first n ranks: the slowest rank's steps/s, and rank 0's time split. */
  const once = async (way, n, size, extra = {}) => {
    const steps = STEPS[size];
    const spec = {
      group: `bench/${randomUUID()}`,
      ranks: n,
      size,
      members: hellos.slice(0, n).map((h, r) => ({ rank: r, instance: h.instance })),
    };
    const out = await Promise.all(ranks.slice(0, n).map((r) => r.ask(way, { spec, steps, run: spec.group, ...extra })));
    const us = Math.max(...out.map((o) => o.us));
    return { stepsPerSec: steps / (us / 1e6), split: out[0].split, split1: out[1].split, steps };
  };

  const ALGOS = { rs: 'reduce-scatter', reduce: 'reduce' };
  const cases = [
    { n: 3, size: MLP, redis: true },
    { n: 2, size: MLP },
    { n: 3, size: BIG },
    { n: 2, size: BIG },
  ];
  const results = new Map();
  const loads = [loadavg()[0]];
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of cases) {
      for (const [a, algorithm] of Object.entries(ALGOS)) {
        for (const way of c.redis ? ['stores', 'tcp', 'redis'] : ['stores', 'tcp']) {
          const r = await once(way, c.n, c.size, { algorithm });
          const k = `${c.n}/${c.size}/${way}/${a}`;
          if (!results.has(k)) results.set(k, []);
          results.get(k).push(r);
        }
      }
    }
  }
  loads.push(loadavg()[0]);
  const pings = await Promise.all(ranks.map((r) => r.ask('ping')));
  const fig = (n, size, way, a) => {
    const rs = results.get(`${n}/${size}/${way}/${a}`);
    const sps = median(rs.map((r) => r.stepsPerSec));
    const split = {};
    const split1 = {};
    for (const k of ['writeMs', 'waitMs', 'transferMs', 'reduceMs']) {
      split[k] = rs[0].split ? median(rs.map((r) => r.split[k] / r.steps)) : 0;
      split1[k] = rs[0].split1 ? median(rs.map((r) => r.split1[k] / r.steps)) : 0;
    }
    return { sps, mbps: (sps * size * 4) / 1e6, split, split1 };
  };
  const mb = (size) => `${((size * 4) / 1e6).toFixed(2)} MB`;
  const show = (f) => `${f.sps.toFixed(0)} steps/s, ${f.mbps.toFixed(0)} MB/s`;
  const rows = [];
  // The algorithm is chosen by this measurement: the faster through the stores at 3 ranks and the MLP's size.
  const pick = fig(3, MLP, 'stores', 'rs').sps >= fig(3, MLP, 'stores', 'reduce').sps ? 'rs' : 'reduce';
  const s3 = fig(3, MLP, 'stores', pick);
  const tcp3 = fig(3, MLP, 'tcp', pick);
  const redis3 = fig(3, MLP, 'redis', pick);
  rows.push({
    case: `3 ranks, ${mb(MLP)}, ${ALGOS[pick]}: stores (StoreCollective.allReduce) vs raw TCP`,
    result: show(s3),
    baseline: `raw TCP ${show(tcp3)}`,
    ratio: fmtRatio(s3.sps / tcp3.sps),
    target: '>= 0.8x',
    met: met(s3.sps / tcp3.sps >= 0.8),
  });
  rows.push({
    case: `3 ranks, ${mb(MLP)}, ${ALGOS[pick]}: stores vs Redis (SET, GETRANGE/GET, BLPOP tokens)`,
    result: show(s3),
    baseline: `Redis ${show(redis3)}`,
    ratio: fmtRatio(s3.sps / redis3.sps),
    target: '>= 5x',
    met: met(s3.sps / redis3.sps >= 5),
  });
  for (const { n, size } of cases) {
    const rs = fig(n, size, 'stores', 'rs');
    const red = fig(n, size, 'stores', 'reduce');
    rows.push({
      case: `${n} ranks, ${mb(size)}, stores: reduce-scatter vs reducing rank 0`,
      result: show(rs),
      baseline: `reduce ${show(red)}`,
      ratio: fmtRatio(rs.sps / red.sps),
    });
    for (const a of Object.keys(ALGOS)) {
      if (n === 3 && size === MLP && a === pick) continue;
      const st = fig(n, size, 'stores', a);
      const tcp = fig(n, size, 'tcp', a);
      rows.push({
        case: `${n} ranks, ${mb(size)}, ${ALGOS[a]}: stores vs raw TCP`,
        result: show(st),
        baseline: `raw TCP ${show(tcp)}`,
        ratio: fmtRatio(st.sps / tcp.sps),
      });
    }
  }
  const redisOther = fig(3, MLP, 'redis', pick === 'rs' ? 'reduce' : 'rs');
  const storesOther = fig(3, MLP, 'stores', pick === 'rs' ? 'reduce' : 'rs');
  rows.push({
    case: `3 ranks, ${mb(MLP)}, ${ALGOS[pick === 'rs' ? 'reduce' : 'rs']}: stores vs Redis`,
    result: show(storesOther),
    baseline: `Redis ${show(redisOther)}`,
    ratio: fmtRatio(storesOther.sps / redisOther.sps),
  });
  const stepMs = 1000 / s3.sps;
  const splitText = (sp) =>
    `write ${sp.writeMs.toFixed(2)} ms, wait ${sp.waitMs.toFixed(2)} ms, transfer ${sp.transferMs.toFixed(2)} ms, reduce ${sp.reduceMs.toFixed(2)} ms`;
  const notes = [
    `median of ${ROUNDS} rounds of ${STEPS[MLP]} steps (${mb(MLP)}) or ${STEPS[BIG]} steps (${mb(BIG)}) after ${WARMUP} warm-up steps; all ways back to back in every round, same processes`,
    `where a step's time goes, 3 ranks, ${mb(MLP)}, stores, ${ALGOS[pick]} (${stepMs.toFixed(2)} ms a step): rank 0 ${splitText(s3.split)}; rank 1 ${splitText(s3.split1)} (write: allocate, fill, seal, IPC round trips to the rank's store; wait: from this rank's last act to the first byte of an answer, i.e. the peers and the stores working; transfer: first byte to last)`,
    `a hop to a rank's own store and back (IPC status round trip, all ranks at once, after the rounds) p50 ${pings.map((p) => fmtUs(p.p50)).join(' / ')}: the stores' path crosses a process boundary twice more per step than raw TCP (rank -> its store -> the reader, against rank -> reader), so it pays about two such hops per phase`,
    'raw TCP pushes: a sender writes as soon as it has its bytes, and bytes that arrive before the receiver has posted where they go (it is still busy with the previous step) are staged and copied once more; the stores pull (a read parked in the store is answered into its destination), which is why the stores can beat raw TCP at 8 MB',
    `load average (1 min) ${loads[0].toFixed(2)} at start, ${loads[1].toFixed(2)} at end; 2 vCPUs shared by 3 ranks and 3 stores (raw TCP and Redis: 3 ranks + 1 redis-server)`,
  ];
  report('gradient exchange per step: stores vs raw TCP vs Redis', rows, notes);
  await Promise.all(ranks.map((r) => r.stop()));
  await redisServer.stop();
  await Promise.all(stores.map((s) => s.stop()));
  await etcd.stop();
}

if (role === 'rank') await rankMain();
else await main();
