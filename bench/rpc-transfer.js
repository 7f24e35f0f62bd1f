/**
 * Moving 1 GiB between two stores over RPC, against a raw TCP copy of the
 * same bytes between the same two addresses, in the same run.
 *
 *   source store A on 127.0.0.1 holds a 1 GiB uint8 tensor, written by a local
 *   IPC client (so A's own mapping of those pages starts cold, as in real use)
 *
 *   raw TCP: a Node sender on 127.0.0.1 writes 1 GiB in 64 MiB writes, a Node
 *     receiver on 127.0.0.2 reads it: 'data' events (64 KiB chunks, dropped),
 *     and net's `onread` straight into warm memory (pages faulted in), fresh
 *     memory (a new buffer) and fresh shared memory (a new memfd mapping):
 *     each Trellis case is compared with the raw copy into the same kind of memory
 *   migrate, warm destination: store B on 127.0.0.2 started with --reserve
 *     (arena pages faulted in at start), B pulls the tensor from A into its arena
 *   migrate, cold destination: a store on 127.0.0.2 started for the round,
 *     without --reserve, so every byte lands on a page the kernel must find
 *     first (a store reuses freed pages for a while, so each round gets a new one)
 *   RPC get: a RemoteClient on 127.0.0.2 gets the tensor into a fresh buffer
 *   RPC put: the same client puts 1 GiB into a store on 127.0.0.2 started for
 *     the round (the store reads the bytes straight into the new blob)
 *   fresh pages twice per round: the migrate and the put into new stores with
 *     the store's prefault off (the default) and on (STORE_PREFAULT=1: a libuv
 *     thread faults the blobs in ahead of the socket, store/prefault.ts), each pair
 *     right after its own raw copy into a new memfd, the pair order
 *     alternating by round; beside each case the notes print MemFree and
 *     Shmem before it and the reclaim counters that moved over it
 *     (/proc/vmstat allocstall, pgscan/pgsteal_direct, compact_stall)
 *   over TLS: a second source store on 127.0.0.1 serves RPC over TLS (a
 *     certificate made with openssl for the run) and holds the same bytes;
 *     B migrates from it and the RemoteClient gets from it, each right after
 *     the same copy over plain TCP and a raw TLS copy (the Node sender and
 *     receiver over node:tls, 'data' events copied into warm memory), the
 *     two baselines its rows are compared with
 *
 * Each figure is the median of ROUNDS; in every round each Trellis case runs
 * right after the raw copy it is compared with. Every process is its own (stores, sender,
 * receiver, getter): 2 vCPUs here, so sender and receiver each have one.
 * Ratios are Trellis rate / raw TCP rate; the target is >= 0.9x.
 */
import { readFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { makeCerts } from '../scripts/test-certs.mjs';
import {
  fmtRate,
  fmtRatio,
  GiB,
  MiB,
  median,
  meminfo,
  met,
  nowUs,
  ROOT,
  report,
  serveParent,
  startRole,
  tempDir,
  track,
  trellis,
  vmstat,
  vmstatDelta,
} from './lib.js';

const SIZE = 1 * GiB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const WRITE = 64 * MiB;
const HOST_A = '127.0.0.1';
const HOST_B = '127.0.0.2';
const TOKEN = 'bench-rpc-transfer-token-0123456789';

// ---- children: a store, or a peer (TCP sender / receiver, RPC getter) ---------

const role = process.argv.find((a) => a.startsWith('--role='))?.slice(7);

/** Sample bytes spread over the object, to check a copy without reading all of it twice. */
function samples(bytes) {
  const out = [];
  for (let i = 0; i < 64; i++) out.push(bytes[Math.floor(((bytes.length - 1) * i) / 63)]);
  return out.join(',');
}

/** The TLS material for a store serving TLS (STORE_TLS_CERT/KEY) or one speaking TLS to a source (TLS_CA). */
async function tlsFromEnv(role) {
  const { loadTls } = await import(join(ROOT, 'dist/src/tls-config.js'));
  if (role === 'server') {
    if (!process.env.STORE_TLS_CERT) return undefined;
    return { cert: process.env.STORE_TLS_CERT, key: process.env.STORE_TLS_KEY };
  }
  return process.env.TLS_CA ? loadTls({ ca: process.env.TLS_CA }, 'client') : undefined;
}

async function storeMain() {
  const { StoreServer, startRpc, connect, migrateFrom } = await trellis();
  const serveTls = await tlsFromEnv('server');
  const clientTls = await tlsFromEnv('client');
  const { dir, cleanup } = tempDir('trellis-bench-rpc-');
  const host = process.env.STORE_HOST;
  const socket = join(dir, 'store.sock');
  const store = await StoreServer.start(
    {
      socket,
      size: SIZE + 256 * MiB,
      reserve: process.env.STORE_RESERVE === '1',
      prefault: process.env.STORE_PREFAULT === '1',
      segmentSize: SIZE + 256 * MiB,
      rpcPort: 0,
      rpcHost: host,
      token: TOKEN,
      ...(serveTls ? { tls: serveTls } : {}),
    },
    startRpc,
  );
  const client = await connect({ socket });
  process.once('SIGTERM', async () => {
    await client.close();
    await store.close();
    cleanup();
    process.exit(0);
  });
  serveParent({
    address: () => ({ endpoint: store.rpcAddress }),
    fill: async () => {
      const w = await client.createTensor('uint8', [SIZE]);
      const chunk = new Uint8Array(WRITE);
      for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
      for (let off = 0; off < SIZE; off += WRITE) w.data.set(chunk, off);
      const id = await w.seal();
      return { id, samples: samples(w.data) };
    },
    migrate: async ({ endpoint, id, tls }) => {
      const t = nowUs();
      const local = await migrateFrom(store, endpoint, TOKEN, id, {
        localAddress: host,
        ...(tls ? { tls: clientTls } : {}),
      });
      const us = nowUs() - t;
      // The copy read through IPC, zero-copy: check it, then drop it for the next round.
      const v = await client.get(local);
      const s = samples(v.data);
      await client.release(local);
      await client.delete(local);
      return { us, samples: s, bytes: v.data.byteLength };
    },
  });
}

/** Writes all of `source` to the socket in WRITE-sized writes, waiting for drain, then ends it. */
function sendAll(s, source) {
  s.on('error', () => {});
  let sent = 0;
  const go = () => {
    while (sent < source.length) {
      const ok = s.write(source.subarray(sent, sent + WRITE));
      sent += WRITE;
      if (!ok) {
        s.once('drain', go);
        return;
      }
    }
    s.end();
  };
  go();
}

async function peerMain() {
  const host = process.env.PEER_HOST;
  const { native } = await import(join(ROOT, 'dist/src/native.js'));
  let server = null;
  let value = null;
  let warm = null;
  serveParent({
    /** Raw TCP sender: each connection gets the same SIZE bytes of one warm buffer, in WRITE-sized writes. */
    listen: () =>
      new Promise((resolve) => {
        const source = new Uint8Array(SIZE).fill(7);
        server = createServer((s) => sendAll(s, source));
        server.listen(0, host, () => resolve({ port: server.address().port }));
      }),
    /** Raw TLS sender (STORE_TLS_CERT/KEY): the same bytes as `listen`, encrypted. */
    listenTls: () =>
      new Promise((resolve) => {
        const source = new Uint8Array(SIZE).fill(7);
        const tlsServer = createTlsServer(
          { cert: readFileSync(process.env.STORE_TLS_CERT), key: readFileSync(process.env.STORE_TLS_KEY) },
          (s) => sendAll(s, source),
        );
        tlsServer.listen(0, host, () => resolve({ port: tlsServer.address().port }));
      }),
    /** Raw TLS receiver (TLS_CA): 'data' chunks copied into a warm buffer, time from the handshake to the last byte. */
    receiveTls: ({ port, from }) =>
      new Promise((resolve, reject) => {
        warm ??= new Uint8Array(SIZE).fill(1);
        const dst = warm;
        let got = 0;
        let t = 0;
        const tcp = netConnect({ host: from, port, localAddress: host });
        const s = tlsConnect({ socket: tcp, host: from, ca: readFileSync(process.env.TLS_CA) }, () => {
          t = nowUs();
        });
        s.on('data', (d) => {
          dst.set(d.subarray(0, Math.min(d.length, SIZE - got)), got);
          got += d.length;
        });
        s.on('end', () => resolve({ us: nowUs() - t, bytes: got }));
        s.on('error', reject);
      }),
    /**
     * Raw TCP receiver, time from connect to the last byte. into: 'data' (net's
     * 64 KiB chunks, dropped), 'warm' (onread straight into a 1 GiB buffer whose
     * pages are faulted in, like a reserved arena) or 'fresh' (onread into a new
     * 1 GiB buffer, like a RemoteClient's get).
     */
    receive: ({ port, from, into }) =>
      new Promise((resolve, reject) => {
        let got = 0;
        let t = 0;
        let dst = null;
        if (into === 'warm') dst = warm ??= new Uint8Array(SIZE).fill(1);
        if (into === 'fresh') dst = new Uint8Array(SIZE);
        let memfd = -1;
        if (into === 'shm' || into === 'shm-prefault') {
          // A new memfd mapping, as a store's arena is: shared-memory pages cost the kernel more to find.
          memfd = native.memfdCreate('bench-raw', SIZE);
          dst = new Uint8Array(native.map(memfd, SIZE, true));
        }
        if (into === 'shm-prefault') {
          // Pages faulted in by a libuv thread, WRITE bytes at a time ahead of the socket.
          const buf = dst.buffer;
          (async () => {
            for (let off = 0; off < SIZE; off += WRITE) await native.populateAsync(buf, off, WRITE);
          })();
        }
        const spare = new Uint8Array(64 * 1024);
        const s = netConnect(
          {
            host: from,
            port,
            localAddress: host,
            onread: dst
              ? {
                  buffer: () => (got < SIZE ? dst.subarray(got, got + WRITE) : spare),
                  callback: (n) => {
                    got += n;
                  },
                }
              : undefined,
          },
          () => {
            t = nowUs();
          },
        );
        if (!dst)
          s.on('data', (d) => {
            got += d.length;
          });
        s.on('end', () => {
          const us = nowUs() - t;
          // The pages go back now: the mapping itself lives until a GC collects it, and until
          // then the next new store could not recycle them (it got pages the host had taken back).
          if (memfd >= 0) native.punchHole(memfd, 0, SIZE);
          if (memfd >= 0) native.closeFd(memfd);
          resolve({ us, bytes: got });
        });
        s.on('error', reject);
      }),
    /** RPC put of SIZE bytes through a RemoteClient; the object is deleted again. */
    rpcPut: async ({ endpoint }) => {
      const { connect } = await trellis();
      value ??= new Uint8Array(SIZE).fill(9);
      const client = await connect({
        rpc: `${endpoint.host}:${endpoint.port}`,
        token: TOKEN,
        localAddress: host,
      });
      const t = nowUs();
      const id = await client.put(value);
      const us = nowUs() - t;
      await client.delete(id);
      await client.close();
      return { us };
    },
    /** RPC get into a fresh buffer through a RemoteClient. */
    rpcGet: async ({ endpoint, id, tls }) => {
      const { connect } = await trellis();
      const client = await connect({
        rpc: `${endpoint.host}:${endpoint.port}`,
        token: TOKEN,
        localAddress: host,
        ...(tls ? { tls: { ca: process.env.TLS_CA } } : {}),
      });
      const t = nowUs();
      const v = await client.get(id);
      const us = nowUs() - t;
      await client.close();
      return { us, samples: samples(v.data), bytes: v.data.byteLength };
    },
  });
}

// ---- parent -------------------------------------------------------------------

function start(env) {
  // Each case starts and ends with a collection, so none pays for the garbage (1 GiB buffers) of another.
  return startRole(import.meta.url, env, { execArgv: ['--expose-gc'] });
}

async function main() {
  const certDir = tempDir('trellis-bench-certs-');
  const certs = makeCerts(certDir.dir);
  const tlsEnv = { STORE_TLS_CERT: certs.serverCert, STORE_TLS_KEY: certs.serverKey };
  const a = start({ ROLE: 'store', STORE_HOST: HOST_A });
  const aTls = start({ ROLE: 'store', STORE_HOST: HOST_A, ...tlsEnv });
  const bWarm = start({ ROLE: 'store', STORE_HOST: HOST_B, STORE_RESERVE: '1', TLS_CA: certs.ca });
  const sender = start({ ROLE: 'peer', PEER_HOST: HOST_A, ...tlsEnv });
  const receiver = start({ ROLE: 'peer', PEER_HOST: HOST_B, TLS_CA: certs.ca });
  const all = [a, aTls, bWarm, sender, receiver];
  /** A store started for one case of one round: its arena pages have never been touched. */
  const fresh = async (fn, env = {}) => {
    const store = start({ ROLE: 'store', STORE_HOST: HOST_B, ...env });
    try {
      await store.ready;
      return await fn(store);
    } finally {
      await store.stop();
    }
  };
  try {
    await Promise.all(all.map((p) => p.ready));
    const { endpoint } = await a.ask('address');
    const { id, samples: want } = await a.ask('fill');
    const { endpoint: tlsEndpoint } = await aTls.ask('address');
    const { id: tlsId, samples: tlsWant } = await aTls.ask('fill');
    if (tlsWant !== want) throw new Error('the two source stores hold different bytes');
    const { port } = await sender.ask('listen');
    const { port: tlsPort } = await sender.ask('listenTls');

    const times = {
      tcpData: [],
      tcp: [],
      tcpFresh: [],
      tcpShm: [],
      warm: [],
      cold: [],
      get: [],
      put: [],
      tlsWarm: [],
      tlsGet: [],
      tlsRaw: [],
      tcpShm2: [],
      coldOn: [],
      putOn: [],
      firstMigrate: 0,
    };
    /** Per fresh-page case: memory before it and the reclaim counters over it (the "first new store" question). */
    const counters = [];
    const counted = async (name, fn) => {
      const mem = meminfo();
      const v0 = vmstat();
      const out = await fn();
      counters.push(
        `${name}: ${fmtRate(SIZE, out.us)}, MemFree ${mem.MemFree} MiB, Shmem ${mem.Shmem} MiB before; ${vmstatDelta(v0, vmstat())}`,
      );
      return out;
    };
    const check = (what, r) => {
      if (r.bytes !== SIZE || r.samples !== want) throw new Error(`${what} did not copy the bytes exactly`);
    };
    // The very first send reads A's pages through A's own mapping for the first time.
    const first = await bWarm.ask('migrate', { endpoint, id });
    check('first migrate', first);
    times.firstMigrate = first.us;
    check('first TLS migrate', await bWarm.ask('migrate', { endpoint: tlsEndpoint, id: tlsId, tls: true }));
    const raw = async (into, list) => {
      const r = await receiver.ask('receive', { port, from: HOST_A, into });
      if (r.bytes !== SIZE) throw new Error(`raw TCP moved ${r.bytes} bytes`);
      list.push(r.us);
    };
    // Each Trellis case runs right after the raw copy it is compared with, into
    // the same kind of memory. (On this VM a page the guest freed a moment ago
    // is cheap to fault in again; one the hypervisor took back is not, so each
    // pair starts from memory the step before it just freed.)
    for (let r = 0; r < ROUNDS; r++) {
      await raw('data', times.tcpData);
      await raw('warm', times.tcp);
      const warm = await bWarm.ask('migrate', { endpoint, id });
      check('migrate', warm);
      times.warm.push(warm.us);
      const tlsRaw = await receiver.ask('receiveTls', { port: tlsPort, from: HOST_A });
      if (tlsRaw.bytes !== SIZE) throw new Error(`raw TLS moved ${tlsRaw.bytes} bytes`);
      times.tlsRaw.push(tlsRaw.us);
      const tlsWarm = await bWarm.ask('migrate', { endpoint: tlsEndpoint, id: tlsId, tls: true });
      check('TLS migrate', tlsWarm);
      times.tlsWarm.push(tlsWarm.us);
      await raw('fresh', times.tcpFresh);
      const get = await receiver.ask('rpcGet', { endpoint, id });
      check('RPC get', get);
      times.get.push(get.us);
      const tlsGet = await receiver.ask('rpcGet', { endpoint: tlsEndpoint, id: tlsId, tls: true });
      check('RPC get over TLS', tlsGet);
      times.tlsGet.push(tlsGet.us);
      // Fresh pages, with the store's prefault (store/prefault.ts) on and off, each pair after its own raw
      // copy into a new memfd; which pair goes first alternates by round.
      const pair = async (env, shm, coldList, putList, tag) => {
        await raw('shm', shm);
        const cold = await fresh(
          (c) => counted(`round ${r} migrate ${tag}`, () => c.ask('migrate', { endpoint, id })),
          env,
        );
        check('migrate', cold);
        coldList.push(cold.us);
        const put = await fresh(async (c) => {
          const to = (await c.ask('address')).endpoint;
          return counted(`round ${r} put ${tag}`, () => receiver.ask('rpcPut', { endpoint: to }));
        }, env);
        putList.push(put.us);
      };
      const off = () => pair({}, times.tcpShm, times.cold, times.put, 'prefault off');
      const on = () => pair({ STORE_PREFAULT: '1' }, times.tcpShm2, times.coldOn, times.putOn, 'prefault on');
      if (r % 2 === 0) {
        await on();
        await off();
      } else {
        await off();
        await on();
      }
    }

    const rate = (us) => fmtRate(SIZE, us);
    const warmUs = median(times.tcp);
    const freshUs = median(times.tcpFresh);
    /**
     * The ratio is the median of per-round ratios (the raw copy and the Trellis
     * copy of one round ran back to back), so load that drifts over the run
     * (other work on a 2-vCPU VM) moves both sides of each ratio alike.
     */
    const row = (name, list, baseList, baseName, target) => {
      const ratio = median(list.map((us, i) => baseList[Math.min(i, baseList.length - 1)] / us));
      const out = {
        case: name,
        result: rate(median(list)),
        baseline: `${baseName} ${rate(median(baseList))}`,
        ratio: fmtRatio(ratio),
      };
      if (target) Object.assign(out, { target: '>= 0.9x', met: met(ratio >= 0.9) });
      return out;
    };
    const rounds = (list) => list.map(rate).join(', ');
    report(
      'rpc-transfer: 1 GiB between two stores (127.0.0.1 -> 127.0.0.2) vs raw TCP',
      [
        { case: "raw TCP -> 'data' events (net's 64 KiB chunks, dropped)", result: rate(median(times.tcpData)) },
        { case: 'raw TCP -> onread into warm memory (faulted-in 1 GiB)', result: rate(warmUs) },
        { case: 'raw TCP -> onread into fresh memory (new 1 GiB buffer)', result: rate(freshUs) },
        { case: 'raw TCP -> onread into fresh shared memory (new 1 GiB memfd)', result: rate(median(times.tcpShm)) },
        row('migrate into a reserved store (warm pages)', times.warm, times.tcp, 'raw warm', true),
        row('migrate into a new store without reserve (fresh pages)', times.cold, times.tcpShm, 'raw fresh shm', true),
        row('RPC get by a RemoteClient (into a fresh buffer)', times.get, times.tcpFresh, 'raw fresh', true),
        row('RPC get, against raw TCP into warm memory', times.get, times.tcp, 'raw warm', false),
        row('RPC put by a RemoteClient (new store, fresh pages)', times.put, times.tcpShm, 'raw fresh shm', true),
        row('migrate into a new store, prefault on', times.coldOn, times.tcpShm2, 'raw fresh shm', false),
        row('RPC put into a new store, prefault on', times.putOn, times.tcpShm2, 'raw fresh shm', false),
        row('migrate into a new store: prefault on against off', times.coldOn, times.cold, 'prefault off', false),
        row('RPC put into a new store: prefault on against off', times.putOn, times.put, 'prefault off', false),
        row('raw TLS -> data events copied into warm memory', times.tlsRaw, times.tcp, 'raw warm', false),
        row('migrate over TLS into the reserved store (warm pages)', times.tlsWarm, times.tlsRaw, 'raw TLS', false),
        row('migrate over TLS, against migrate over TCP', times.tlsWarm, times.warm, 'migrate over TCP', false),
        row('RPC get over TLS (into a fresh buffer)', times.tlsGet, times.get, 'RPC get over TCP', false),
        row(
          "first migrate (source's own mapping of the pages cold)",
          [times.firstMigrate],
          times.tcp,
          'raw warm',
          false,
        ),
      ],
      [
        `median of ${ROUNDS} rounds, cases interleaved; ratio = median of the per-round ratios; each Trellis copy checked at 64 sample offsets`,
        'raw TCP: a Node sender writes the same 1 GiB buffer in 64 MiB writes each round; each Trellis ratio compares with the raw receive into the same kind of memory (warm: pages faulted in; fresh: new pages the kernel must find), run just before it',
        "fresh-page figures swing with the state of the VM's memory; compare them only within a pair. Cause of the old \"first new store\" anomaly (bench/fresh-pages.js): a page the guest left free for more than ~2 s has been handed back to the host (virtio-balloon free page reporting), and its first write is a hypervisor fault, ~5x slower than a write into a page freed a moment ago; no reclaim or compaction counter moves, THP for shmem is off, the memory cgroup has no limit. The first new store of a round got such pages because the raw receiver's memfd stayed mapped (so unfreed) until a later GC; the second store recycled the first one's pages. The receiver now punches its memfd when done. A store may fault fresh blobs in ahead of the socket (StoreOptions.prefault, store/prefault.ts): measured against off in the rows above",
        `raw warm rounds: ${rounds(times.tcp)}; raw fresh rounds: ${rounds(times.tcpFresh)}; raw fresh shm rounds: ${rounds(times.tcpShm)}; raw 'data' rounds: ${rounds(times.tcpData)}`,
        `migrate (warm) rounds: ${rounds(times.warm)}; migrate (fresh) rounds: ${rounds(times.cold)}`,
        `RPC get rounds: ${rounds(times.get)}; RPC put rounds: ${rounds(times.put)}`,
        `prefault on: raw fresh shm rounds ${rounds(times.tcpShm2)}; migrate rounds ${rounds(times.coldOn)}; RPC put rounds ${rounds(times.putOn)}`,
        ...counters,
        `load average at the end: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
        `raw TLS rounds: ${rounds(times.tlsRaw)}; TLS migrate rounds: ${rounds(times.tlsWarm)}; TLS get rounds: ${rounds(times.tlsGet)}`,
        'TLS: node:tls (OpenSSL; TLS 1.3, AES-GCM on this CPU), server certificate only; its rows compare with the same copy over plain TCP in the same round. Under TLS the receiver cannot read straight into the destination (tls has no onread): decrypted chunks are copied once',
        'Trellis times include the TCP connect and token handshake; the raw copies have none',
      ],
    );
  } finally {
    await Promise.all(all.map((p) => p.stop()));
    certDir.cleanup();
  }
}

if (role === 'store') await storeMain();
else if (role === 'peer') await peerMain();
else await main();
