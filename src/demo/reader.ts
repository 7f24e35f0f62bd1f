/**
 * A demo reader process. In "shm" mode it gets the training tensors from the
 * store by name (views over shared memory); in "copy" mode it receives the
 * same bytes on stdin, as a process must when data is copied to it. Either
 * way it computes per-class pixel means and prints one JSON line.
 */
import { connect } from '../client/connect.js';
import type { Tensor } from '../codecs/tensor.js';
import { classMeans, digestMeans } from './class-means.js';
import { procMemory } from './proc-memory.js';

async function readStdin(total: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(total);
  let off = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunk.copy(out, off);
    off += chunk.length;
  }
  if (off !== total) throw new Error(`expected ${total} bytes on stdin, got ${off}`);
  return out;
}

async function main(): Promise<void> {
  const [mode, arg1, arg2] = process.argv.slice(2);
  const before = procMemory();
  const t0 = performance.now();
  let images: Uint8Array;
  let labels: Uint8Array;
  let count: number;
  let close = async () => {};
  if (mode === 'shm') {
    const client = await connect({ socket: arg1, name: 'demo reader' });
    close = () => client.close();
    const [imgId, labId] = await Promise.all([
      client.getName('fmnist/train/images', { wait: true, timeoutMs: 10_000 }),
      client.getName('fmnist/train/labels', { wait: true, timeoutMs: 10_000 }),
    ]);
    const [img, lab] = (await client.getMany([imgId, labId])) as Tensor[];
    images = img.data as Uint8Array;
    labels = lab.data as Uint8Array;
    count = img.shape[0];
  } else {
    const imgBytes = Number(arg1);
    const labBytes = Number(arg2);
    const all = await readStdin(imgBytes + labBytes);
    images = all.subarray(0, imgBytes);
    labels = all.subarray(imgBytes);
    count = labBytes;
  }
  const t1 = performance.now();
  const means = classMeans(images, labels, count);
  const t2 = performance.now();
  const after = procMemory();
  await close();
  process.stdout.write(
    `${JSON.stringify({
      mode,
      pid: process.pid,
      acquireMs: t1 - t0,
      computeMs: t2 - t1,
      digest: digestMeans(means),
      overall: means.overall,
      counts: means.counts,
      privateGrowth: after.anonymous - before.anonymous,
      sharedGrowth: after.shared - before.shared,
    })}\n`,
  );
}

main().catch((e) => {
  process.stderr.write(`reader: ${e?.code ?? ''} ${e?.stack ?? e}\n`);
  process.exit(1);
});
