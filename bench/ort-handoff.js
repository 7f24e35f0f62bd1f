/**
 * The cost of handing a store tensor to onnxruntime, by size (1 KiB to 256 MiB).
 *
 *   trellis:  getSync of a held float32 tensor (a view over the arena) →
 *             ModelSession.run (checks, ort.Tensor over the same view, run)
 *   baseline: copy the same view into a fresh Float32Array → new ort.Tensor →
 *             session.run — what a data path without shared views pays
 *
 * The graph is Shape(x): onnxruntime's Shape kernel reads dims only, so the
 * figures are the handoff itself, not compute. Context rows run ReduceSum,
 * which reads every element, over the view and over a copy.
 *
 * The store runs in another process; this process maps its arena.
 */
import ort from 'onnxruntime-node';
import { fmtBytes, fmtRatio, fmtUs, KiB, MiB, met, nowUs, report, startStore, stats, trellis } from './lib.js';

const SIZES = [KiB, 16 * KiB, 256 * KiB, 4 * MiB, 64 * MiB, 256 * MiB];

/** Iterations per size: many for small tensors, a few where a copy costs ~a second. */
const iterations = (size) => (size <= 256 * KiB ? 2000 : size <= 4 * MiB ? 300 : size <= 64 * MiB ? 12 : 5);

function graph(T, op) {
  const g = new T.GraphBuilder(`handoff_${op}`);
  const x = g.input('x', 'float32', ['n']);
  if (op === 'Shape') {
    g.op('Shape', [x], {}, 'y');
    g.output('y', 'int64', [1]);
  } else {
    g.op('ReduceSum', [x], { keepdims: 0 }, 'y');
    g.output('y', 'float32', []);
  }
  return g.build();
}

async function time(n, fn) {
  await fn(); // warm: first touches of pages, first allocation of this size
  const us = [];
  for (let i = 0; i < n; i++) {
    const t = nowUs();
    await fn();
    us.push(nowUs() - t);
  }
  return stats(us);
}

async function main() {
  const T = await trellis();
  const store = await startStore({ size: '1G' });
  const client = await T.connect({ socket: store.socket, name: 'ort-handoff' });
  const opts = { intraOpNumThreads: 1 };
  const shape = await T.ModelSession.fromBytes(graph(T, 'Shape'), opts);
  const sum = await T.ModelSession.fromBytes(graph(T, 'ReduceSum'), opts);

  // Warm the JIT on the paths measured below, so the smallest size is not also the first one.
  const warmId = await client.put(new Float32Array(256));
  const warm = await client.get(warmId);
  await time(3000, () => shape.run({ x: warm }));
  await time(3000, () => shape.session.run({ x: new ort.Tensor('float32', warm.data.slice(), [256]) }));
  await client.release(warmId);
  await client.delete(warmId);

  const out = [];
  for (const size of SIZES) {
    const n = size / 4;
    const w = await client.createTensor('float32', [n]);
    for (let i = 0; i < n; i++) w.data[i] = (i % 1000) * 0.001;
    const id = await w.seal();
    const held = await client.get(id); // held: getSync below needs no round trip
    // Read every page of this process's read-only mapping once, so both paths start warm.
    let check = 0;
    for (let i = 0; i < n; i += 1024) check += held.data[i];
    if (!(check >= 0)) throw new Error('bad tensor');

    const viaView = async (s) => {
      const t = client.getSync(id);
      const r = await s.run({ x: t });
      await client.release(id); // not the last reference: no round trip
      return r;
    };
    const viaCopy = async (s) => {
      const t = client.getSync(id);
      const copy = new Float32Array(t.data.length);
      copy.set(t.data);
      const r = await s.session.run({ x: new ort.Tensor('float32', copy, [n]) });
      await client.release(id);
      return r;
    };
    const iters = iterations(size);
    const view = await time(iters, () => viaView(shape));
    const copy = await time(iters, () => viaCopy(shape));
    const sumView = await time(Math.max(3, Math.ceil(iters / 4)), () => viaView(sum));
    const sumCopy = await time(Math.max(3, Math.ceil(iters / 4)), () => viaCopy(sum));
    const a = (await viaView(sum)).y.data[0];
    const b = (await viaCopy(sum)).y.data[0];
    if (a !== b) throw new Error(`ReduceSum over the view (${a}) and the copy (${b}) differ`);
    out.push({ size, view, copy, sumView, sumCopy });
    await client.release(id);
    await client.delete(id);
    console.log(`${fmtBytes(size)}: view p50 ${fmtUs(view.p50)}, copy p50 ${fmtUs(copy.p50)}`);
  }
  await shape.close();
  await sum.close();
  await client.close();
  await store.stop();

  const base = out[0].view.p50;
  const rows = out.map((c) => ({
    case: `${fmtBytes(c.size)} store tensor → onnxruntime (Shape graph)`,
    result: `p50 ${fmtUs(c.view.p50)} / p99 ${fmtUs(c.view.p99)}`,
    baseline: `copy → ort.Tensor: p50 ${fmtUs(c.copy.p50)}`,
    ratio: fmtRatio(c.copy.p50 / c.view.p50),
    target: `<= 2x the ${fmtBytes(out[0].size)} figure`,
    met: met(c.view.p50 <= 2 * base),
  }));
  for (const c of out.filter((x) => x.size >= 4 * MiB)) {
    rows.push({
      case: `${fmtBytes(c.size)} ReduceSum over the view (context: compute grows, handoff does not)`,
      result: `p50 ${fmtUs(c.sumView.p50)}`,
      baseline: `over a copy: p50 ${fmtUs(c.sumCopy.p50)}`,
      ratio: fmtRatio(c.sumCopy.p50 / c.sumView.p50),
    });
  }
  const last = out.at(-1);
  report('onnxruntime handoff: store tensor view vs copy (ratio > 1 means the view is faster)', rows, [
    `handoff at ${fmtBytes(last.size)} costs ${fmtRatio(last.view.p50 / base)} the ${fmtBytes(out[0].size)} figure; the copy baseline grows ${fmtRatio(last.copy.p50 / out[0].copy.p50)}`,
    'the copy baseline allocates a fresh Float32Array each time, so it pays first-touch page faults as a real copying path does',
    'onnxruntime-node reads CPU input tensors in place; ModelSession.run also checks names, dtypes and shapes',
  ]);
}

await main();
