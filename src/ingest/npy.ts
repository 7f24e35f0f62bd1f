/**
 * The .npy format (numpy's): the magic "\x93NUMPY", a version, a header
 * length (u16 in version 1, u32 in 2 and 3), and a Python dict literal
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded so the
 * data starts at a multiple of 64; then the elements, row-major.
 */
import { DTYPES, type DType } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import type { ByteSource } from './byte-source.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

/** numpy type codes (kind + itemsize) of each Trellis dtype. */
const CODES: Record<string, DType> = {
  b1: 'bool',
  i1: 'int8',
  i2: 'int16',
  i4: 'int32',
  i8: 'int64',
  u1: 'uint8',
  u2: 'uint16',
  u4: 'uint32',
  u8: 'uint64',
  f2: 'float16',
  f4: 'float32',
  f8: 'float64',
};
const CODE_OF = Object.fromEntries(Object.entries(CODES).map(([c, d]) => [d, c])) as Record<DType, string>;

export interface NpyHeader {
  dtype: DType;
  shape: number[];
  /** The file's elements are big-endian (swap them after reading). */
  bigEndian: boolean;
  itemsize: number;
  /** Bytes of the data after the header. */
  dataBytes: number;
}

/** Reads and checks a .npy header; the source is left at the first element. */
export async function readNpyHeader(src: ByteSource): Promise<NpyHeader> {
  const pre = new Uint8Array(10);
  try {
    await src.readInto(pre);
  } catch (e) {
    if (e instanceof TrellisError && e.code === 'ERR_FILE_TRUNCATED')
      throw new TrellisError('ERR_FILE_FORMAT', `${src.path} is not a .npy file: shorter than its preamble`);
    throw e;
  }
  if (!MAGIC.every((b, i) => pre[i] === b)) {
    throw new TrellisError('ERR_FILE_FORMAT', `${src.path} is not a .npy file: it does not start with \\x93NUMPY`);
  }
  const major = pre[6]!;
  if (major < 1 || major > 3)
    throw new TrellisError('ERR_FILE_FORMAT', `${src.path}: .npy version ${major} is unknown`);
  let hlen: number;
  if (major === 1) hlen = pre[8]! | (pre[9]! << 8);
  else {
    const more = new Uint8Array(2);
    await src.readInto(more);
    hlen = new DataView(new Uint8Array([pre[8]!, pre[9]!, more[0]!, more[1]!]).buffer).getUint32(0, true);
  }
  if (hlen > 1 << 20) throw new TrellisError('ERR_FILE_FORMAT', `${src.path}: a .npy header of ${hlen} bytes`);
  const text = new Uint8Array(hlen);
  await src.readInto(text);
  const dict = Buffer.from(text).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(dict)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(dict)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(dict)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new TrellisError(
      'ERR_FILE_FORMAT',
      `${src.path}: the .npy header ${JSON.stringify(dict.trim())} lacks descr, fortran_order or shape`,
    );
  }
  if (fortran === 'True') {
    throw new TrellisError(
      'ERR_FILE_FORMAT',
      `${src.path}: the array is in Fortran (column-major) order; save it C-ordered (numpy.ascontiguousarray)`,
    );
  }
  const m = /^([<>|=])([a-z])(\d+)$/.exec(descr);
  const dtype = m ? CODES[`${m[2]}${m[3]}`] : undefined;
  if (!m || !dtype) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${src.path}: numpy dtype ${descr} has no Trellis dtype (one of ${Object.keys(DTYPES).join(', ')})`,
    );
  }
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const n = Number(s.replace(/L$/, ''));
      if (!Number.isSafeInteger(n) || n < 0)
        throw new TrellisError('ERR_FILE_FORMAT', `${src.path}: bad .npy shape (${shapeText})`);
      return n;
    });
  const itemsize = Number(m[3]);
  const dataBytes = shape.reduce((a, b) => a * b, 1) * itemsize;
  if (src.size !== undefined && src.size - src.position < dataBytes) {
    throw new TrellisError(
      'ERR_FILE_TRUNCATED',
      `${src.path} holds ${src.size - src.position} bytes of data, its header announces ${dataBytes} (${descr} of shape (${shape.join(', ')}))`,
    );
  }
  return { dtype, shape, bigEndian: m[1] === '>' && itemsize > 1, itemsize, dataBytes };
}

/** A version 1 .npy header for a little-endian C-ordered array, padded to 64 bytes. */
export function npyHeader(dtype: DType, shape: readonly number[]): Uint8Array {
  const descr = dtype === 'bool' ? '|b1' : `${CODE_OF[dtype][1] === '1' ? '|' : '<'}${CODE_OF[dtype]}`;
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  dict = `${dict.padEnd(total - 10 - 1)}\n`;
  const out = new Uint8Array(total);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  out[8] = dict.length & 0xff;
  out[9] = dict.length >> 8;
  out.set(Buffer.from(dict, 'latin1'), 10);
  return out;
}
