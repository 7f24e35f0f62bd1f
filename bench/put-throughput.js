/**
 * put throughput of a 256 MiB object, against memcpy (TypedArray.set between
 * two warm plain ArrayBuffers) measured in the same process, same run.
 *
 *   createBlob + fill (TypedArray.set from a source array) + seal
 *   put(Float32Array)
 *
 * Warm: repeat puts from one client reusing freed memory (delete between).
 * Cold: the first put from a fresh process, whose mapping of the arena has no
 * page-table entries yet (store reserved: pages exist, but this process maps
 * them fault by fault), and the first put into a store that was not reserved
 * (pages are allocated on first touch as well).
 *
 * One extra row measures a proposed fix without changing src/: the cold put
 * with MADV_POPULATE_WRITE over the blob's range in the client before filling.
 */
import { join } from 'node:path';
import {
  childMain,
  fmtRate,
  fmtRatio,
  fmtUs,
  isChild,
  MiB,
  median,
  met,
  nowUs,
  ROOT,
  report,
  runChild,
  startStore,
  trellis,
} from './lib.js';

const SIZE = 256 * MiB;
const WARM_REPS = 9;

function memcpy(src, dst) {
  const t = nowUs();
  dst.set(src);
  return nowUs() - t;
}

async function putBlob(client, src, populate) {
  const t = nowUs();
  const w = await client.createBlob(SIZE);
  const t1 = nowUs();
  if (populate) populate(w.buffer);
  const t2 = nowUs();
  new Float32Array(w.buffer.buffer, w.buffer.byteOffset, src.length).set(src);
  const t3 = nowUs();
  const id = await w.seal();
  const t4 = nowUs();
  return { us: t4 - t, id, parts: { create: t1 - t, populate: t2 - t1, fill: t3 - t2, seal: t4 - t3 } };
}

async function putTensor(client, src) {
  const t = nowUs();
  const id = await client.put(src);
  return { us: nowUs() - t, id };
}

/** One fresh process: a cold put, then warm puts interleaved with memcpy of the same size. */
async function child({ socket, kind, populate }) {
  const { connect } = await trellis();
  const src = new Float32Array(SIZE / 4);
  for (let i = 0; i < src.length; i += 1024) src[i] = i; // every page touched
  let pop;
  if (populate) {
    const { native } = await import(join(ROOT, 'dist/src/native.js'));
    pop = (v) => native.populate(v.buffer, v.byteOffset, v.byteLength, populate === 'write');
  }
  const client = await connect({ socket, name: `put-throughput ${kind}` });
  const once = () => (kind === 'blob' ? putBlob(client, src, pop) : putTensor(client, src));
  const cold = await once();
  await client.delete(cold.id);
  const dst = new Float32Array(src.length);
  const memcpyCold = memcpy(src, dst); // fresh anonymous memory: every page faults once
  const warm = [];
  const copies = [];
  for (let i = 0; i < WARM_REPS; i++) {
    copies.push(memcpy(src, dst));
    const r = await once();
    warm.push(r.us);
    await client.delete(r.id);
  }
  await client.close();
  return { memcpy: median(copies), memcpyCold, cold: cold.us, parts: cold.parts, warm: median(warm) };
}

/** Runs `n` fresh processes and keeps the median of each figure. */
async function fresh(n, input) {
  const runs = [];
  for (let i = 0; i < n; i++) runs.push(await runChild(import.meta.url, input));
  const m = (f) => median(runs.map(f));
  const parts = runs[0].parts && {
    create: m((r) => r.parts.create),
    populate: m((r) => r.parts.populate),
    fill: m((r) => r.parts.fill),
    seal: m((r) => r.parts.seal),
  };
  return {
    memcpy: m((r) => r.memcpy),
    memcpyCold: m((r) => r.memcpyCold),
    cold: m((r) => r.cold),
    warm: m((r) => r.warm),
    parts,
  };
}

const partsNote = (label, p) =>
  `${label}: createBlob ${fmtUs(p.create)} (fd + mapping), populate ${fmtUs(p.populate)}, fill ${fmtUs(p.fill)}, seal ${fmtUs(p.seal)}`;

async function main() {
  const reserved = await startStore({ size: '1G', reserve: true });
  const blob = await fresh(3, { socket: reserved.socket, kind: 'blob' });
  const tensor = await fresh(3, { socket: reserved.socket, kind: 'tensor' });
  const popRead = await fresh(3, { socket: reserved.socket, kind: 'blob', populate: 'read' });
  const popWrite = await fresh(3, { socket: reserved.socket, kind: 'blob', populate: 'write' });
  await reserved.stop();
  const plain = await startStore({ size: '1G' });
  const unreserved = await fresh(2, { socket: plain.socket, kind: 'blob' });
  await plain.stop();

  const all = [blob, tensor, popRead, popWrite, unreserved];
  const memcpyUs = median(all.map((r) => r.memcpy));
  const memcpyCold = median(all.map((r) => r.memcpyCold));
  const base = `memcpy ${fmtRate(SIZE, memcpyUs)}`;
  // Warm rows divide by the memcpy measured interleaved in the same processes.
  const row = (name, us, target, ref = memcpyUs) => ({
    case: name,
    result: `${fmtRate(SIZE, us)} (${fmtUs(us)})`,
    baseline: ref === memcpyUs ? base : `memcpy ${fmtRate(SIZE, ref)}`,
    ratio: fmtRatio(ref / us),
    target,
    met: target ? met(ref / us >= 0.8) : undefined,
  });
  report(
    'put throughput, 256 MiB (store reserved unless noted)',
    [
      {
        case: 'memcpy warm: TypedArray.set, 2 plain ArrayBuffers',
        result: `${fmtRate(SIZE, memcpyUs)} (${fmtUs(memcpyUs)})`,
      },
      {
        case: 'memcpy cold: TypedArray.set into a new ArrayBuffer',
        result: `${fmtRate(SIZE, memcpyCold)} (${fmtUs(memcpyCold)})`,
      },
      row('warm createBlob + fill + seal', blob.warm, '>= 0.8x', blob.memcpy),
      row('warm put(Float32Array)', tensor.warm, '>= 0.8x', tensor.memcpy),
      row('cold createBlob + fill + seal (fresh client mapping)', blob.cold),
      row('cold put(Float32Array) (fresh client mapping)', tensor.cold),
      row('cold createBlob + MADV_POPULATE_READ + fill + seal (proposed)', popRead.cold),
      row('cold createBlob + MADV_POPULATE_WRITE + fill + seal', popWrite.cold),
      row('cold createBlob + fill + seal, store not reserved (fresh pages)', unreserved.cold),
      row('repeat createBlob + fill + seal, store not reserved (delete punches holes)', unreserved.warm),
    ],
    [
      `warm: median of ${WARM_REPS} puts after one cold put, delete between, interleaved with memcpy in the same process`,
      'cold: first put of a fresh process, median of 3 processes (2 for the unreserved store)',
      'ratio = put rate / memcpy rate (1.00x = as fast as memcpy)',
      partsNote('cold createBlob path', blob.parts),
      partsNote('with MADV_POPULATE_READ', popRead.parts),
      partsNote('with MADV_POPULATE_WRITE', popWrite.parts),
      partsNote('store not reserved', unreserved.parts),
      'proposed rows call native.populate on the blob range right after createBlob (what createBlob could do itself)',
    ],
  );
}

if (isChild) childMain(child);
else await main();
