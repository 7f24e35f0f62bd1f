/**
 * Two byte streams as one ingest source: a features file and a labels file
 * (IDX, .npy), each with a header read first, then elements in row order,
 * read straight into the shard's tensors and turned little-endian in place.
 */
import type { DType } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import { type ByteSource, openBytes } from './byte-source.js';
import { type IngestSource, swapBytes } from './ingest-source.js';

/** What a header says about one file of the pair. */
export interface ArrayHeader {
  dtype: DType;
  shape: number[];
  /** Element size to byte-swap by after reading (1: the file is little-endian already). */
  swap: number;
}

export interface PairFormat {
  name: string;
  readHeader(src: ByteSource): Promise<ArrayHeader>;
  /** What the features and the labels are called in messages, e.g. images / labels. */
  features: string;
  /** Least rank of the features array. */
  minRank: number;
  /** Bytes after the data are an error (IDX) or ignored (.npy, as numpy does). */
  strictEnd: boolean;
}

export async function openPair(format: PairFormat, featuresPath: string, labelsPath: string): Promise<IngestSource> {
  const xs = await openBytes(featuresPath);
  let ys: ByteSource | undefined;
  try {
    ys = await openBytes(labelsPath);
    const x = await format.readHeader(xs);
    const y = await format.readHeader(ys);
    if (x.shape.length < format.minRank) {
      throw new TrellisError(
        'ERR_FILE_FORMAT',
        `${featuresPath}: ${format.features} need rank ${format.minRank} or more, the file has shape (${x.shape.join(', ')})`,
      );
    }
    if (y.shape.length !== 1) {
      throw new TrellisError(
        'ERR_FILE_FORMAT',
        `${labelsPath}: labels need rank 1, the file has shape (${y.shape.join(', ')})`,
      );
    }
    if (x.shape[0] !== y.shape[0]) {
      throw new TrellisError(
        'ERR_SIZE_MISMATCH',
        `${featuresPath} holds ${x.shape[0]} ${format.features} but ${labelsPath} ${y.shape[0]} labels`,
      );
    }
    return new PairSource(format, xs, ys, x, y);
  } catch (e) {
    await xs.close();
    await ys?.close();
    throw e;
  }
}

class PairSource implements IngestSource {
  readonly format: string;
  readonly rows: number;
  readonly sampleShape: number[];
  readonly dtype: DType;
  readonly labelDtype: DType;

  constructor(
    private readonly pair: PairFormat,
    private readonly xs: ByteSource,
    private readonly ys: ByteSource,
    private readonly x: ArrayHeader,
    private readonly y: ArrayHeader,
  ) {
    this.format = pair.name;
    this.rows = x.shape[0]!;
    this.sampleShape = x.shape.slice(1);
    this.dtype = x.dtype;
    this.labelDtype = y.dtype;
  }

  async fill(x: Uint8Array, y: Uint8Array, _rows: number, onBytes: (n: number) => void): Promise<void> {
    await this.xs.readInto(x, onBytes);
    swapBytes(x, this.x.swap);
    await this.ys.readInto(y, onBytes);
    swapBytes(y, this.y.swap);
  }

  async finish(): Promise<void> {
    if (!this.pair.strictEnd) return;
    for (const s of [this.xs, this.ys]) {
      if (!(await s.atEnd())) {
        throw new TrellisError('ERR_FILE_FORMAT', `${s.path} has bytes after the ${s.position} its header announces`);
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.xs.close(), this.ys.close()]);
  }
}
