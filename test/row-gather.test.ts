/**
 * The native row gather (native/row-gather.cc) through LocalRows, the one
 * caller: the bytes it copies for shuffled and natural orders, across parts,
 * with wide labels; and its guards — every bad call throws its code and
 * writes nothing, from TypeScript's checks and from the C++ ones behind them.
 */
import { describe, expect, it } from 'vitest';
import { LocalRows } from '../dist/src/loaders/local-rows.js';
import { epochOrder } from '../dist/src/loaders/sampler.js';
import type { ShardPart } from '../dist/src/loaders/shard.js';
import { native } from '../dist/src/native.js';

/** Parts of `sizes` rows of `rowBytes` uint8 features (byte k of global row r is (r * 7 + k) & 255) and int64 labels (r). */
function partsOf(sizes: number[], rowBytes: number): ShardPart[] {
  let first = 0;
  return sizes.map((rows) => {
    const x = new Uint8Array(rows * rowBytes);
    for (let r = 0; r < rows; r++) for (let k = 0; k < rowBytes; k++) x[r * rowBytes + k] = ((first + r) * 7 + k) & 255;
    const y = BigInt64Array.from({ length: rows }, (_, r) => BigInt(first + r));
    first += rows;
    return {
      x: { dtype: 'uint8', shape: [rows, rowBytes], data: x },
      y: { dtype: 'int64', shape: [rows], data: y },
      rows,
    } as ShardPart;
  });
}

/** What a gather of `rows` must produce: features back to back, int64 labels at the layout's offset. */
function expected(rowBytes: number, rows: number[], yOffset: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  rows.forEach((r, i) => {
    for (let k = 0; k < rowBytes; k++) out[i * rowBytes + k] = (r * 7 + k) & 255;
  });
  new BigInt64Array(out.buffer, yOffset, rows.length).set(rows.map(BigInt));
  return out;
}

describe('native row gather: the bytes', () => {
  const rowBytes = 100;
  const local = new LocalRows(partsOf([37, 1, 50, 12], rowBytes));

  it('a shuffled batch: each row from its part, labels after the features at the layout offset', () => {
    const order = epochOrder(local.rows, true, 3, 0)!;
    for (const [start, end] of [
      [0, 32],
      [32, 64],
      [90, 100],
    ]) {
      const L = local.layout(end - start);
      const dst = new Uint8Array(L.size);
      local.gather(dst, order, start, end);
      expect(dst).toEqual(expected(rowBytes, Array.from(order.subarray(start, end)), L.yOffset, L.size));
    }
  });

  it('natural order across part boundaries (runs copied whole), and runs inside a shuffled order', () => {
    const L = local.layout(60);
    const dst = new Uint8Array(L.size);
    local.gather(dst, null, 20, 80); // parts 0, 1 and 2
    expect(dst).toEqual(
      expected(
        rowBytes,
        Array.from({ length: 60 }, (_, i) => 20 + i),
        L.yOffset,
        L.size,
      ),
    );
    // consecutive rows that cross from part 0 into part 1 and 2: 35, 36 | 37 | 38, 39
    const order = Uint32Array.from([35, 36, 37, 38, 39, 5, 99, 98, 88]);
    const M = local.layout(order.length);
    const out = new Uint8Array(M.size);
    local.gather(out, order, 0, order.length);
    expect(out).toEqual(expected(rowBytes, Array.from(order), M.yOffset, M.size));
  });

  it('an empty range writes nothing', () => {
    const dst = new Uint8Array(8).fill(9);
    local.gather(dst, null, 5, 5);
    expect(dst).toEqual(new Uint8Array(8).fill(9));
  });
});

describe('native row gather: guards throw their code and write nothing', () => {
  const rowBytes = 16;
  const local = new LocalRows(partsOf([10, 6], rowBytes));
  const L = local.layout(4);

  it('positions outside the order or the rows: ERR_BAD_REQUEST', () => {
    const dst = new Uint8Array(L.size);
    const order = Uint32Array.from([3, 1, 2, 0]);
    for (const [start, end] of [
      [-1, 3],
      [2, 1],
      [0, 5],
      [1.5, 3],
    ]) {
      expect(() => local.gather(dst, order, start, end)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    }
    expect(() => local.gather(dst, null, 14, 18)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(dst).toEqual(new Uint8Array(L.size));
  });

  it('a row index beyond the rows, even after good ones: ERR_BAD_REQUEST from C++, nothing written', () => {
    const dst = new Uint8Array(L.size);
    expect(() => local.gather(dst, Uint32Array.from([0, 1, 16, 2]), 0, 4)).toThrow(
      expect.objectContaining({
        code: 'ERR_BAD_REQUEST',
        message: 'gather: row 16 at position 2 is not below 16',
      }),
    );
    expect(dst).toEqual(new Uint8Array(L.size));
  });

  it('a destination too small: ERR_SIZE_MISMATCH, from TypeScript and from C++', () => {
    const small = new Uint8Array(L.size - 1);
    expect(() => local.gather(small, null, 0, 4)).toThrow(expect.objectContaining({ code: 'ERR_SIZE_MISMATCH' }));
    expect(small).toEqual(new Uint8Array(L.size - 1));
    // straight to C++: labels that would run past the end, or start inside the features
    const g = new native.RowGather([new Uint8Array(64)], [new Uint8Array(4)], 16, 1);
    const dst = new Uint8Array(68);
    expect(() => g.gather(null, 0, 4, dst, 65)).toThrow(
      expect.objectContaining({
        code: 'ERR_SIZE_MISMATCH',
        message: 'gather: 4 rows need 64 bytes of features before the labels at 65 and 4 of labels, in a buffer of 68',
      }),
    );
    expect(() => g.gather(null, 0, 4, dst, 63)).toThrow(expect.objectContaining({ code: 'ERR_SIZE_MISMATCH' }));
    expect(dst).toEqual(new Uint8Array(68));
  });

  it('wrong argument types reaching C++: ERR_BAD_REQUEST, not a crash', () => {
    const g = new native.RowGather([new Uint8Array(64)], [new Uint8Array(4)], 16, 1);
    const dst = new Uint8Array(68);
    const bad = g.gather.bind(g) as (...a: unknown[]) => void;
    for (const args of [
      [new Int32Array(4), 0, 4, dst, 64],
      [null, 0, 4, new Uint16Array(34), 64],
      [null, '0', 4, dst, 64],
      [null, 0, 4],
    ]) {
      expect(() => bad(...args)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    }
  });

  it('parts that do not hold whole rows, or labels of another length: ERR_SIZE_MISMATCH; no parts: ERR_BAD_REQUEST', () => {
    expect(() => new native.RowGather([new Uint8Array(65)], [new Uint8Array(4)], 16, 1)).toThrow(
      expect.objectContaining({ code: 'ERR_SIZE_MISMATCH' }),
    );
    expect(() => new native.RowGather([new Uint8Array(64)], [new Uint8Array(5)], 16, 1)).toThrow(
      expect.objectContaining({ code: 'ERR_SIZE_MISMATCH' }),
    );
    expect(() => new native.RowGather([], [], 16, 1)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    const ctor = native.RowGather as unknown as new (...a: unknown[]) => unknown;
    expect(() => new ctor([new Float32Array(16)], [new Uint8Array(4)], 16, 1)).toThrow(
      expect.objectContaining({ code: 'ERR_BAD_REQUEST' }),
    );
  });
});
