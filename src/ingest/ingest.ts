/**
 * Builds a sharded dataset from files, all or nothing: headers are checked
 * before anything is allocated, each shard is allocated in the store and
 * filled in place straight from the file, and on any failure the shard being
 * written is aborted and the shards already sealed are deleted, so the store
 * is left as it was (no names, no objects).
 *
 * @example
 *   const src = await openIngestSource('/data/train-images-idx3-ubyte.gz');
 *   const { id, shards } = await ingest(client, src, { name: 'fmnist/train', shards: 4 });
 */
import type { TrellisClient } from '../client/client.js';
import { DTYPES } from '../codecs/tensor.js';
import { invalidParameter, isTrellisError, TrellisError } from '../errors.js';
import { createShard, type ShardWriter } from '../loaders/shard-writer.js';
import type { IngestSource } from './ingest-source.js';

export interface IngestOptions {
  /** The dataset's name; must not be bound yet. */
  name: string;
  /** Number of shards (at most one per row). */
  shards: number;
  /** Called with the bytes written so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Recorded on the dataset object beside format, rows and source. */
  meta?: Record<string, unknown>;
}

export interface IngestResult {
  id: string;
  name: string;
  shards: string[];
  rows: number;
  sampleShape: number[];
  dtype: string;
  labelDtype: string;
  bytes: number;
}

export async function ingest(client: TrellisClient, source: IngestSource, opts: IngestOptions): Promise<IngestResult> {
  if (!Number.isSafeInteger(opts.shards) || opts.shards < 1)
    throw invalidParameter('shards', 'a positive integer', opts.shards);
  const rows = source.rows;
  if (rows === 0) throw new TrellisError('ERR_FILE_FORMAT', 'the input holds no rows; a dataset needs at least one');
  if (opts.shards > rows)
    throw new TrellisError('ERR_BAD_REQUEST', `${opts.shards} shards for ${rows} rows: at most one shard per row`);
  // Refused before any memory is taken; createDataset checks again at the end.
  try {
    const id = await client.getName(opts.name);
    throw new TrellisError('ERR_OBJECT_EXISTS', `the name ${opts.name} is bound already (to ${id})`);
  } catch (e) {
    if (!isTrellisError(e, 'ERR_NAME_NOT_FOUND')) throw e;
  }
  const per = source.sampleShape.reduce((a, b) => a * b, 1);
  const rowBytes = per * DTYPES[source.dtype].BYTES_PER_ELEMENT + DTYPES[source.labelDtype].BYTES_PER_ELEMENT;
  const total = rows * rowBytes;
  let done = 0;
  const onBytes = (n: number) => {
    done += n;
    opts.onProgress?.(done, total);
  };
  const shardRows = Math.ceil(rows / opts.shards);
  const ids: string[] = [];
  let writer: ShardWriter | undefined;
  try {
    for (let start = 0; start < rows; start += shardRows) {
      const n = Math.min(shardRows, rows - start);
      writer = await createShard(client, {
        rows: n,
        sampleShape: source.sampleShape,
        dtype: source.dtype,
        labelDtype: source.labelDtype,
      });
      const x = writer.x.data;
      const y = writer.y.data;
      await source.fill(
        new Uint8Array(x.buffer, x.byteOffset, x.byteLength),
        new Uint8Array(y.buffer, y.byteOffset, y.byteLength),
        n,
        onBytes,
      );
      ids.push(await writer.seal());
      writer = undefined;
    }
    await source.finish();
    const id = await client.createDataset(opts.name, ids, {
      meta: { format: 'tensor', rows, source: source.format, ...opts.meta },
    });
    return {
      id,
      name: opts.name,
      shards: ids,
      rows,
      sampleShape: source.sampleShape,
      dtype: source.dtype,
      labelDtype: source.labelDtype,
      bytes: total,
    };
  } catch (e) {
    if (writer) await writer.abort();
    if (ids.length > 0) await client.delete(ids).catch(() => {});
    throw e;
  }
}
