/**
 * Fashion-MNIST from the Debian package dataset-fashion-mnist (gzipped IDX
 * files), or, when it is not installed, a generated stand-in of the same
 * shape: 28x28 uint8 images in 10 classes whose pixels follow a per-class
 * pattern plus noise, so class statistics and classifiers still mean something.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { TrellisError } from '../../src/errors.js';
import { xorshift32Unit } from '../../src/random.js';

const DEFAULT_DATA_DIR = '/usr/share/datasets/fashion-mnist';
export const CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
] as const;

export interface Split {
  /** [n, 28, 28] uint8 */
  images: Uint8Array;
  /** [n] uint8 */
  labels: Uint8Array;
  count: number;
}

export interface FashionMnist {
  train: Split;
  test: Split;
  source: 'debian-package' | 'generated';
  dir: string | null;
}

/** Parses an IDX file (big-endian header: magic with type and rank, then dims). */
export function parseIdx(buf: Uint8Array, expectRank: number): { dims: number[]; data: Uint8Array } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.byteLength < 4) throw new TrellisError('ERR_BAD_REQUEST', 'IDX file too short');
  const type = buf[2];
  const rank = buf[3];
  if (dv.getUint16(0) !== 0 || type !== 0x08 || rank !== expectRank) {
    throw new TrellisError('ERR_BAD_REQUEST', `not a uint8 IDX file of rank ${expectRank}`);
  }
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(dv.getUint32(4 + 4 * i));
  const start = 4 + 4 * rank;
  const n = dims.reduce((a, b) => a * b, 1);
  if (buf.byteLength - start !== n) {
    throw new TrellisError('ERR_SIZE_MISMATCH', `IDX body has ${buf.byteLength - start} bytes, dims say ${n}`);
  }
  return { dims, data: buf.subarray(start) };
}

function readSplit(dir: string, prefix: string): Split {
  const img = parseIdx(gunzipSync(readFileSync(join(dir, `${prefix}-images-idx3-ubyte.gz`))), 3);
  const lab = parseIdx(gunzipSync(readFileSync(join(dir, `${prefix}-labels-idx1-ubyte.gz`))), 1);
  if (img.dims[0] !== lab.dims[0] || img.dims[1] !== 28 || img.dims[2] !== 28) {
    throw new TrellisError('ERR_SIZE_MISMATCH', `${prefix}: ${img.dims.join('x')} images for ${lab.dims[0]} labels`);
  }
  return { images: img.data, labels: lab.data, count: lab.dims[0] };
}

export function datasetInstalled(dir = DEFAULT_DATA_DIR): boolean {
  return ['train', 't10k'].every(
    (p) => existsSync(join(dir, `${p}-images-idx3-ubyte.gz`)) && existsSync(join(dir, `${p}-labels-idx1-ubyte.gz`)),
  );
}

export function loadFashionMnist(dir = DEFAULT_DATA_DIR): FashionMnist {
  if (datasetInstalled(dir)) {
    return { train: readSplit(dir, 'train'), test: readSplit(dir, 't10k'), source: 'debian-package', dir };
  }
  return { train: generateSplit(60_000, 1), test: generateSplit(10_000, 2), source: 'generated', dir: null };
}

/** A deterministic stand-in: each class has a prototype image; samples are noisy, shifted copies. */
export function generateSplit(count: number, seed: number): Split {
  const rand = xorshift32Unit(seed);
  const protos: Float32Array[] = [];
  let ps = 12345;
  for (let c = 0; c < 10; c++) {
    const p = new Float32Array(784);
    for (let i = 0; i < 784; i++) {
      ps = (ps * 1103515245 + 12345) & 0x7fffffff;
      const y = Math.floor(i / 28);
      const x = i % 28;
      const blob = Math.exp(-(((x - 8 - c) ** 2 + (y - 6 - ((c * 7) % 15)) ** 2) / 40));
      p[i] = 200 * blob + 30 * ((ps % 100) / 100);
    }
    protos.push(p);
  }
  const images = new Uint8Array(count * 784);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const c = Math.floor(rand() * 10);
    labels[n] = c;
    const p = protos[c];
    const base = n * 784;
    for (let i = 0; i < 784; i++) images[base + i] = Math.max(0, Math.min(255, p[i] + (rand() - 0.5) * 120));
  }
  return { images, labels, count };
}
