/**
 * A demo reader process. In "shm" mode it reads the training set through the
 * sharded loader in shard order: every batch is a view of a shard in shared
 * memory. In "copy" mode it receives the same bytes on stdin, as a process
 * must when data is copied to it. Either way it computes per-class pixel
 * means and prints one JSON line.
 */
import { connect } from '../../src/client/connect.js';
import { TrellisError } from '../../src/errors.js';
import { openLoader } from '../../src/loaders/dataset-loader.js';
import { ClassMeans } from './class-means.js';
import { procMemory } from './proc-memory.js';

async function readStdin(total: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(total);
  let off = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunk.copy(out, off);
    off += chunk.length;
  }
  if (off !== total) throw new TrellisError('ERR_INTERNAL', `expected ${total} bytes on stdin, got ${off}`);
  return out;
}

async function main(): Promise<void> {
  const [mode, arg1, arg2] = process.argv.slice(2);
  const before = procMemory();
  const means = new ClassMeans();
  const t0 = performance.now();
  let acquireMs = 0;
  let batches = 0;
  if (mode === 'shm') {
    await using client = await connect({ socket: arg1, name: 'demo reader' });
    await using loader = await openLoader(client, 'fmnist/train', { batchSize: Number(arg2), shuffle: false });
    acquireMs = performance.now() - t0;
    for await (const b of loader) {
      means.add(b.x.data as Uint8Array, b.y.data as Uint8Array, b.y.shape[0]);
      if (b.source !== 'view')
        throw new TrellisError('ERR_INTERNAL', 'a sequential batch should be a view of its shard');
      batches++;
    }
  } else {
    const imgBytes = Number(arg1);
    const labBytes = Number(arg2);
    const all = await readStdin(imgBytes + labBytes);
    acquireMs = performance.now() - t0;
    means.add(all.subarray(0, imgBytes), all.subarray(imgBytes), labBytes);
    batches = 1;
  }
  const after = procMemory();
  process.stdout.write(
    `${JSON.stringify({
      mode,
      pid: process.pid,
      acquireMs,
      totalMs: performance.now() - t0,
      batches,
      digest: means.digest(),
      overall: means.overall(),
      counts: means.counts,
      privateGrowth: after.anonymous - before.anonymous,
    })}\n`,
  );
}

main().catch((e) => {
  process.stderr.write(`reader: ${e?.code ?? ''} ${e?.stack ?? e}\n`);
  process.exit(1);
});
