/**
 * Fashion-MNIST as the training tests use it across nodes: `fm/train` as
 * shards of `rows` rows dealt round-robin over the given stores' clients
 * (persisted, so every node sees them), and `fm/test` as one shard of the
 * first `testRows` test images on the first store.
 */
import { loadFashionMnist } from '../../dist/examples/training/fashion-mnist.js';
import type { TrellisClient } from '../../dist/src/index.js';
import { writeShard } from '../../dist/src/loaders/shard-writer.js';

export async function writeFmnistShards(
  clients: TrellisClient[],
  o: { shardsPerNode: number; rows: number; testRows: number; replicas?: number },
): Promise<void> {
  const data = loadFashionMnist();
  const { rows, testRows } = o;
  const opts = o.replicas === undefined ? undefined : { replicas: o.replicas };
  const ids: string[] = [];
  for (let s = 0; s < clients.length * o.shardsPerNode; s++) {
    const c = clients[s % clients.length];
    const id = await writeShard(
      c,
      { dtype: 'uint8', shape: [rows, 784], data: data.train.images.subarray(s * rows * 784, (s + 1) * rows * 784) },
      { dtype: 'uint8', shape: [rows], data: data.train.labels.subarray(s * rows, (s + 1) * rows) },
    );
    await c.persist(id);
    ids.push(id);
  }
  await clients[0].createDataset('fm/train', ids, opts);
  const test = await writeShard(
    clients[0],
    { dtype: 'uint8', shape: [testRows, 784], data: data.test.images.subarray(0, testRows * 784) },
    { dtype: 'uint8', shape: [testRows], data: data.test.labels.subarray(0, testRows) },
  );
  await clients[0].persist(test);
  await clients[0].createDataset('fm/test', [test], opts);
}
