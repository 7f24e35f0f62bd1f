/**
 * What metrics cost the store's requests, measured in one run against stores
 * that differ only in that:
 *
 *   off   `trellis store` (no metrics port: the store counts gets and puts as
 *         plain numbers, and times nothing)
 *   on    `trellis store --metrics-port P`, scraped every second (Prometheus
 *         scrapes every 15-60 s: this is 15-60x harsher), so every request
 *         also pays for its latency histogram's observe
 *   base  (with `--base DIR`) the same command from another build, e.g. main
 *         before metrics existed: what the always-on counters cost
 *
 * The reader (another process, pinned with the stores to CPU 0) runs rounds
 * against each store in turn, so load on this shared machine falls on all of
 * them alike; each figure is the median over rounds of a round's p50.
 *
 *   node bench/metrics-overhead.js [--base /path/to/other/trellis]
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import {
  CLI,
  childMain,
  fmtRatio,
  fmtUs,
  isChild,
  KiB,
  median,
  nowUs,
  pin,
  report,
  runChild,
  stats,
  stopChild,
  tempDir,
  track,
  trellis,
  waitForOutput,
} from './lib.js';

const ROUNDS = 7;
const GETS = 2000;
const PUTS = 1000;
const BATCHES = 50;
const BATCH = 100;

async function reader({ stores, rounds }) {
  const { connect } = await trellis();
  const clients = {};
  for (const [label, { socket }] of Object.entries(stores)) clients[label] = await connect({ socket });
  const out = {};
  for (const label of Object.keys(stores)) out[label] = { get: [], many: [], put: [] };
  const payload = new Uint8Array(KiB).fill(3);
  for (let round = 0; round < rounds; round++) {
    for (const [label, { ids }] of Object.entries(stores)) {
      const c = clients[label];
      const get = [];
      for (let i = 0; i < GETS + 200; i++) {
        const t = nowUs();
        await c.get(ids[0]);
        await c.release(ids[0]);
        if (i >= 200) get.push(nowUs() - t);
      }
      const many = [];
      for (let i = 0; i < BATCHES + 5; i++) {
        const t = nowUs();
        await c.getMany(ids);
        await Promise.all(ids.map((id) => c.release(id)));
        if (i >= 5) many.push((nowUs() - t) / BATCH);
      }
      const put = [];
      const made = [];
      for (let i = 0; i < PUTS; i++) {
        const t = nowUs();
        made.push(await c.put(payload));
        put.push(nowUs() - t);
      }
      for (const id of made) await c.delete(id);
      out[label].get.push(stats(get).p50);
      out[label].many.push(stats(many).p50);
      out[label].put.push(stats(put).p50);
    }
  }
  for (const c of Object.values(clients)) await c.close();
  return out;
}

/** A store from the CLI at `cli` (this tree's or --base's), waiting for its ready line in either format. */
async function store(cli, extra = []) {
  const { dir, cleanup } = tempDir();
  const socket = join(dir, 'store.sock');
  const child = track(
    spawn(process.execPath, [cli, 'store', '--socket', socket, '--size', '256M', ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  await waitForOutput(child, (out) => /\bready\b/.test(out), `store (${cli})`);
  pin(child.pid, '0');
  return {
    socket,
    stop: async () => {
      await stopChild(child);
      cleanup();
    },
  };
}

async function main() {
  const { connect } = await trellis();
  const { freePort } = await import('../dist/src/free-port.js');
  const at = process.argv.indexOf('--base');
  const base = at > 0 ? process.argv[at + 1] : undefined;
  const port = await freePort();
  const variants = { off: await store(CLI), on: await store(CLI, ['--metrics-port', String(port)]) };
  if (base) variants.base = await store(join(base, 'bin/trellis.js'));
  const stores = {};
  for (const [label, s] of Object.entries(variants)) {
    const c = await connect({ socket: s.socket });
    const ids = [];
    for (let i = 0; i < BATCH; i++) ids.push(await c.put(new Uint8Array(KiB).fill(i)));
    await c.close();
    stores[label] = { socket: s.socket, ids };
  }
  let scrapes = 0;
  const scraper = setInterval(() => {
    fetch(`http://127.0.0.1:${port}/metrics`)
      .then((r) => r.text())
      .then(
        () => scrapes++,
        () => {},
      );
  }, 1000);
  const t0 = nowUs();
  const r = await runChild(import.meta.url, { stores, rounds: ROUNDS }, { cpus: '0' });
  const seconds = (nowUs() - t0) / 1e6;
  clearInterval(scraper);
  for (const s of Object.values(variants)) await s.stop();

  const rows = [];
  const cases = [
    ['get', 'async get + release of a 1 KiB object (round trips)'],
    ['many', `getMany x${BATCH} + releases, per object`],
    ['put', 'put of 1 KiB (inline, one round trip)'],
  ];
  for (const [key, what] of cases) {
    const off = median(r.off[key]);
    const on = median(r.on[key]);
    rows.push({
      case: `${what}: metrics on vs off`,
      result: fmtUs(on),
      baseline: fmtUs(off),
      ratio: fmtRatio(on / off),
    });
    if (r.base) {
      const b = median(r.base[key]);
      rows.push({
        case: `${what}: metrics off vs ${base}`,
        result: fmtUs(off),
        baseline: fmtUs(b),
        ratio: fmtRatio(off / b),
      });
    }
  }
  report('metrics overhead on the store (same run, interleaved rounds)', rows, [
    `${ROUNDS} rounds, each: ${GETS} get+release, ${BATCHES} getMany of ${BATCH}, ${PUTS} puts per store; a figure is the median of the rounds' p50`,
    `the metrics store was scraped ${scrapes} times in ${seconds.toFixed(1)} s (every second)`,
    'stores and reader pinned to CPU 0 (taskset); ratio = result / baseline, 1.00x = no cost',
  ]);
}

if (isChild) childMain(reader);
else await main();
