/**
 * Arrow columns → tensor views without a copy, over tables built in memory and
 * over tables read back from the store (views over shared memory).
 */
import * as arrow from 'apache-arrow';
import {
  arrowColumnTensor,
  arrowColumnValidity,
  arrowTensor,
  connect,
  shardParts,
  shardTable,
  type TrellisClient,
} from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errCode } from './helpers/child.js';
import { startStore } from './helpers/store.js';

const fsl = (size: number, values: arrow.Data, nullBitmap?: Uint8Array, nullCount = 0) =>
  arrow.makeData({
    type: new arrow.FixedSizeList(size, new arrow.Field('v', values.type, true)),
    length: values.length / size,
    nullCount,
    nullBitmap,
    child: values,
  } as never) as arrow.Data;

const table = (cols: Record<string, arrow.Data>) =>
  new arrow.Table(Object.fromEntries(Object.entries(cols).map(([k, d]) => [k, arrow.makeVector(d)])));

describe('columns as tensors (in memory)', () => {
  it('a FixedSizeList<float32> column is a [rows, listSize] view of the child values', () => {
    const values = Float32Array.from({ length: 12 }, (_, i) => i);
    const t = table({ f: fsl(3, arrow.makeData({ type: new arrow.Float32(), length: 12, data: values })) });
    const x = arrowColumnTensor(t, 'f');
    expect(x.dtype).toBe('float32');
    expect(x.shape).toEqual([4, 3]);
    expect(x.data.buffer).toBe(values.buffer);
    expect(x.data.byteOffset).toBe(0);
    expect(Array.from(x.data as Float32Array)).toEqual(Array.from(values));
  });

  it('nested FixedSizeLists give a tensor of higher rank; uint8 stays uint8', () => {
    const bytes = Uint8Array.from({ length: 2 * 4 * 3 }, (_, i) => i);
    const inner = fsl(3, arrow.makeData({ type: new arrow.Uint8(), length: 24, data: bytes }));
    const t = table({ img: fsl(4, inner) });
    const x = arrowColumnTensor(t, 'img');
    expect(x).toMatchObject({ dtype: 'uint8', shape: [2, 4, 3] });
    expect(x.data.buffer).toBe(bytes.buffer);
  });

  it('primitive columns are 1-d views, every integer and float type with its dtype', () => {
    const cases: [arrow.DataType, ArrayLike<number | bigint>, string][] = [
      [new arrow.Int8(), Int8Array.of(1, -2), 'int8'],
      [new arrow.Int16(), Int16Array.of(1, -2), 'int16'],
      [new arrow.Int32(), Int32Array.of(1, -2), 'int32'],
      [new arrow.Int64(), BigInt64Array.of(1n, -2n), 'int64'],
      [new arrow.Uint8(), Uint8Array.of(1, 2), 'uint8'],
      [new arrow.Uint16(), Uint16Array.of(1, 2), 'uint16'],
      [new arrow.Uint32(), Uint32Array.of(1, 2), 'uint32'],
      [new arrow.Uint64(), BigUint64Array.of(1n, 2n), 'uint64'],
      [new arrow.Float16(), Uint16Array.of(0x3c00, 0x4000), 'float16'],
      [new arrow.Float32(), Float32Array.of(1.5, 2), 'float32'],
      [new arrow.Float64(), Float64Array.of(1.5, 2), 'float64'],
    ];
    for (const [type, data, dtype] of cases) {
      const t = arrowTensor(arrow.makeData({ type, length: 2, data } as never) as arrow.Data);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([2]);
      expect(t.data.buffer).toBe((data as Uint8Array).buffer);
      expect(Array.from(t.data as ArrayLike<number>)).toEqual(Array.from(data as ArrayLike<number>));
    }
  });

  it('a sliced column is a view starting at the first row of the slice', () => {
    const values = Float32Array.from({ length: 12 }, (_, i) => i);
    const v = arrow.makeVector(fsl(3, arrow.makeData({ type: new arrow.Float32(), length: 12, data: values })));
    const x = arrowTensor(v.slice(1, 3));
    expect(x.shape).toEqual([2, 3]);
    expect(x.data.buffer).toBe(values.buffer);
    expect(x.data.byteOffset).toBe(3 * 4);
    expect(Array.from(x.data as Float32Array)).toEqual([3, 4, 5, 6, 7, 8]);
  });

  it('nulls are refused with ERR_UNSUPPORTED, or allowed with the validity bitmap exposed as a view', async () => {
    const bitmap = Uint8Array.of(0b1101);
    const d = arrow.makeData({
      type: new arrow.Int32(),
      length: 4,
      nullCount: 1,
      nullBitmap: bitmap,
      data: Int32Array.of(1, 0, 3, 4),
    });
    const t = table({ y: d });
    expect(await errCode(() => arrowColumnTensor(t, 'y'))).toBe('ERR_UNSUPPORTED');
    const y = arrowColumnTensor(t, 'y', { allowNulls: true });
    expect(Array.from(y.data as Int32Array)).toEqual([1, 0, 3, 4]);
    const v = arrowColumnValidity(t, 'y')!;
    expect(v.bitmap.buffer).toBe(bitmap.buffer);
    expect(v.nullCount).toBe(1);
    expect([0, 1, 2, 3].map(v.isValid)).toEqual([true, false, true, true]);
    expect(
      arrowColumnValidity(
        table({ z: arrow.makeData({ type: new arrow.Int8(), length: 1, data: Int8Array.of(1) }) }),
        'z',
      ),
    ).toBeNull();
    // nulls inside the lists: refused even with allowNulls
    const inner = arrow.makeData({
      type: new arrow.Float32(),
      length: 4,
      nullCount: 1,
      nullBitmap: Uint8Array.of(0b1110),
      data: new Float32Array(4),
    });
    expect(await errCode(() => arrowTensor(fsl(2, inner), { allowNulls: true }))).toBe('ERR_UNSUPPORTED');
  });

  it('refuses what has no zero-copy tensor: Bool, Utf8, several chunks; a missing column is ERR_BAD_REQUEST', async () => {
    const t = new arrow.Table({
      b: arrow.vectorFromArray([true, false], new arrow.Bool()),
      s: arrow.vectorFromArray(['a', 'b'], new arrow.Utf8()),
    });
    expect(await errCode(() => arrowColumnTensor(t, 'b'))).toBe('ERR_UNSUPPORTED');
    expect(await errCode(() => arrowColumnTensor(t, 's'))).toBe('ERR_UNSUPPORTED');
    expect(await errCode(() => arrowColumnTensor(t, 'nope'))).toBe('ERR_BAD_REQUEST');
    const two = new arrow.Table({ x: arrow.makeVector(Int32Array.of(1)) }).concat(
      new arrow.Table({ x: arrow.makeVector(Int32Array.of(2)) }),
    );
    expect(await errCode(() => arrowColumnTensor(two, 'x'))).toBe('ERR_UNSUPPORTED');
    expect(arrowColumnTensor(two.batches[1], 'x').data[0]).toBe(2); // one record batch at a time
  });
});

describe('columns as tensors (tables from the store)', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  let c: TrellisClient;
  beforeAll(async () => {
    env = await startStore({ size: 16 * 1024 * 1024 });
    c = await connect({ socket: env.socket });
  });
  afterAll(async () => {
    await c?.close();
    await env?.stop();
  });

  it('features and labels of a stored shard table are views into the one shared-memory blob', async () => {
    const rows = 50;
    const features = Float32Array.from({ length: rows * 6 }, (_, i) => i / 7);
    const labels = Uint8Array.from({ length: rows }, (_, i) => i % 10);
    const id = await c.put(
      shardTable(
        { dtype: 'float32', shape: [rows, 2, 3], data: features },
        { dtype: 'uint8', shape: [rows], data: labels },
      ),
    );
    const t = (await c.get(id)) as arrow.Table;
    const x = arrowColumnTensor(t, 'features');
    const y = arrowColumnTensor(t, 'label');
    // both over the store's read-only mapping, the same ArrayBuffer, not copies
    expect(x.data.buffer).toBe(y.data.buffer);
    expect(x.data.buffer).toBe(t.getChild('features')!.data[0].children[0].values.buffer);
    expect(x.data.buffer).not.toBe(features.buffer);
    expect(x.data.byteOffset % 64).toBe(0);
    expect(x.shape).toEqual([rows, 6]);
    expect(Array.from(x.data as Float32Array)).toEqual(Array.from(features));
    expect(Array.from(y.data as Uint8Array)).toEqual(Array.from(labels));
    // a shard reader applies the sample shape recorded in the schema
    const [part] = shardParts(t, id);
    expect(part.x.shape).toEqual([rows, 2, 3]);
    expect(part.x.data).toBe(x.data);
    await c.release(id);
  });
});
