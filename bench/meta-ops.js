/**
 * Metadata operations per second against a real etcd (data dir on disk, with
 * fsync, as in production): persist, getName, dataset lookup (locate), from
 * one client through its store, sequential and with 64 in flight (where the
 * store batches etcd writes into transactions). Baseline in the same run:
 * sequential puts straight to etcd with the etcd3 client.
 */
import { Etcd3 } from 'etcd3';
import { fmtOps, inFlight, met, nowUs, report, startEtcd, startStore, trellis } from './lib.js';

const SEQ = 300;
const PAR = 3000;
const WIDTH = 64;

async function rate(n, width, fn) {
  const t = nowUs();
  await inFlight(width, n, fn);
  return n / ((nowUs() - t) / 1e6);
}

async function main() {
  const { connect } = await trellis();
  const etcd = await startEtcd();
  const store = await startStore({
    size: '256M',
    extraArgs: ['--meta', `etcd://${etcd.endpoint}`, '--meta-prefix', '/bench'],
  });
  const client = await connect({ socket: store.socket, name: 'meta-ops' });

  // baseline: sequential puts straight into etcd
  const raw = new Etcd3({ hosts: `http://${etcd.endpoint}` });
  const rawSeq = await rate(SEQ, 1, (i) => raw.put(`/raw/${i}`).value('x'));
  const rawPar = await rate(PAR, WIDTH, (i) => raw.put(`/rawp/${i}`).value('x'));
  raw.close();

  const small = new Uint8Array(16);
  const seqIds = [];
  for (let i = 0; i < SEQ; i++) seqIds.push(await client.put(small));
  const parIds = [];
  for (let i = 0; i < PAR; i++) parIds.push(await client.put(small));
  const persistSeq = await rate(SEQ, 1, (i) => client.persist(seqIds[i]));
  const persistPar = await rate(PAR, WIDTH, (i) => client.persist(parIds[i]));
  await client.putName('bench/name', seqIds[0]);
  const nameSeq = await rate(SEQ, 1, () => client.getName('bench/name'));
  const namePar = await rate(PAR, WIDTH, () => client.getName('bench/name'));
  await client.createDataset('bench/ds', parIds.slice(0, 32));
  const locateSeq = await rate(SEQ, 1, () => client.locate('bench/ds'));
  const locatePar = await rate(PAR / 3, WIDTH, () => client.locate('bench/ds'));
  const st = await client.status();

  await client.close();
  await store.stop();
  await etcd.stop();

  report(
    'metadata operations (etcd)',
    [
      { case: 'etcd3 put, sequential (baseline)', result: fmtOps(rawSeq) },
      { case: `etcd3 put, ${WIDTH} in flight (baseline)`, result: fmtOps(rawPar) },
      {
        case: 'persist, sequential',
        result: fmtOps(persistSeq),
        baseline: fmtOps(rawSeq),
        ratio: `${(persistSeq / rawSeq).toFixed(2)}x`,
      },
      {
        case: `persist, ${WIDTH} in flight (batched txns)`,
        result: fmtOps(persistPar),
        baseline: fmtOps(rawSeq),
        ratio: `${(persistPar / rawSeq).toFixed(1)}x`,
        target: '> sequential etcd puts',
        met: met(persistPar > rawSeq),
      },
      { case: 'getName, sequential', result: fmtOps(nameSeq) },
      { case: `getName, ${WIDTH} in flight`, result: fmtOps(namePar) },
      { case: 'locate 32-shard dataset, sequential', result: fmtOps(locateSeq) },
      { case: `locate 32-shard dataset, ${WIDTH} in flight`, result: fmtOps(locatePar) },
    ],
    [
      `persist publishes the object and its data blob (2 keys); the store sent ${st.meta.transactions} etcd transactions in all`,
      'etcd data dir on disk with fsync (no unsafe flags), one member, on the same 2 vCPUs as the store and client',
    ],
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
