/** A features .npy file ([rows, ...sample]) and a labels .npy file ([rows]) as one ingest source. */
import type { DType } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import { type ByteSource, openBytes } from './byte-source.js';
import { type IngestSource, swapBytes } from './ingest-source.js';
import { type NpyHeader, readNpyHeader } from './npy.js';

export async function openNpy(featuresPath: string, labelsPath: string): Promise<IngestSource> {
  const xs = await openBytes(featuresPath);
  let ys: ByteSource | undefined;
  try {
    ys = await openBytes(labelsPath);
    const x = await readNpyHeader(xs);
    const y = await readNpyHeader(ys);
    if (x.shape.length < 1)
      throw new TrellisError('ERR_FILE_FORMAT', `${featuresPath}: features need rank 1 or more, the array is a scalar`);
    if (y.shape.length !== 1) {
      throw new TrellisError(
        'ERR_FILE_FORMAT',
        `${labelsPath}: labels need rank 1, the array has shape (${y.shape.join(', ')})`,
      );
    }
    if (x.shape[0] !== y.shape[0]) {
      throw new TrellisError(
        'ERR_SIZE_MISMATCH',
        `${featuresPath} holds ${x.shape[0]} rows but ${labelsPath} ${y.shape[0]} labels`,
      );
    }
    return new NpySource(xs, ys, x, y);
  } catch (e) {
    await xs.close();
    await ys?.close();
    throw e;
  }
}

class NpySource implements IngestSource {
  readonly format = 'npy';
  readonly rows: number;
  readonly sampleShape: number[];
  readonly dtype: DType;
  readonly labelDtype: DType;

  constructor(
    private readonly xs: ByteSource,
    private readonly ys: ByteSource,
    private readonly x: NpyHeader,
    private readonly y: NpyHeader,
  ) {
    this.rows = x.shape[0]!;
    this.sampleShape = x.shape.slice(1);
    this.dtype = x.dtype;
    this.labelDtype = y.dtype;
  }

  async fill(x: Uint8Array, y: Uint8Array, _rows: number, onBytes: (n: number) => void): Promise<void> {
    await this.xs.readInto(x, onBytes);
    if (this.x.bigEndian) swapBytes(x, this.x.itemsize);
    await this.ys.readInto(y, onBytes);
    if (this.y.bigEndian) swapBytes(y, this.y.itemsize);
  }

  async finish(): Promise<void> {
    // numpy itself ignores bytes after the data; so do we.
  }

  async close(): Promise<void> {
    await Promise.all([this.xs.close(), this.ys.close()]);
  }
}
