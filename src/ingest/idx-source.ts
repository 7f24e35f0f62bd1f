/**
 * IDX files (the MNIST / Fashion-MNIST format), gzipped or not: a big-endian
 * header — two zero bytes, a type byte, the rank, then one u32 per dimension
 * — and the elements, big-endian. An images file (rank >= 2) pairs with a
 * labels file (rank 1) of the same count.
 */
import type { DType } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import type { ByteSource } from './byte-source.js';
import type { IngestSource } from './ingest-source.js';
import { openPair, type PairFormat } from './pair-source.js';

const IDX_TYPES: Record<number, DType> = {
  8: 'uint8',
  9: 'int8',
  11: 'int16',
  12: 'int32',
  13: 'float32',
  14: 'float64',
};
const ITEM: Record<string, number> = { uint8: 1, int8: 1, int16: 2, int32: 4, float32: 4, float64: 8 };

export interface IdxHeader {
  dtype: DType;
  dims: number[];
}

/** Reads and checks the header; the source is left at the first element. */
export async function readIdxHeader(src: ByteSource): Promise<IdxHeader> {
  const head = new Uint8Array(4);
  await src.readInto(head).catch((e) => {
    throw e instanceof TrellisError && e.code === 'ERR_FILE_TRUNCATED'
      ? new TrellisError('ERR_FILE_FORMAT', `${src.path} is not an IDX file: shorter than its 4-byte magic`)
      : e;
  });
  if (head[0] !== 0 || head[1] !== 0 || head[3] === 0 || head[3]! > 8) {
    const hex = [...head].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new TrellisError('ERR_FILE_FORMAT', `${src.path} is not an IDX file: magic ${hex}, want 00 00 TYPE RANK`);
  }
  const dtype = IDX_TYPES[head[2]!];
  if (!dtype) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${src.path}: IDX element type 0x${head[2]!.toString(16).padStart(2, '0')} is not one of 0x08 (uint8), 0x09 (int8), 0x0b (int16), 0x0c (int32), 0x0d (float32), 0x0e (float64)`,
    );
  }
  const dimBytes = new Uint8Array(4 * head[3]!);
  await src.readInto(dimBytes);
  const dv = new DataView(dimBytes.buffer);
  const dims = Array.from({ length: head[3]! }, (_, i) => dv.getUint32(4 * i));
  if (src.size !== undefined) {
    const want = 4 + dimBytes.length + dims.reduce((a, b) => a * b, 1) * ITEM[dtype]!;
    if (src.size < want)
      throw new TrellisError('ERR_FILE_TRUNCATED', `${src.path} has ${src.size} bytes, its header announces ${want}`);
  }
  return { dtype, dims };
}

const IDX: PairFormat = {
  name: 'idx',
  features: 'images',
  minRank: 2,
  strictEnd: true,
  readHeader: async (src) => {
    const h = await readIdxHeader(src);
    return { dtype: h.dtype, shape: h.dims, swap: ITEM[h.dtype]! };
  },
};

/** The images and labels pair as one source; both headers are checked before anything is stored. */
export function openIdx(imagesPath: string, labelsPath: string): Promise<IngestSource> {
  return openPair(IDX, imagesPath, labelsPath);
}
