import * as arrow from 'apache-arrow';
import { connect, type TrellisClient, TrellisError } from 'trellis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { arrowTableFromRecord, encodeArrowTable } from '../dist/src/codecs/arrow.js';
import type { ObjectRecord } from '../dist/src/protocol/records.js';
import { startStore } from './helpers/store.js';

const SEGMENT = 64 * 1024 * 1024;

// ---- tables with every supported column kind ---------------------------------

/** Every third row (1, 4, 7, …) is null. */
function withNulls<T>(n: number, f: (i: number) => T): (T | null)[] {
  return Array.from({ length: n }, (_, i) => (i % 3 === 1 ? null : f(i)));
}

/** A validity bitmap with the same null pattern as withNulls. */
function nullBitmap(n: number): Uint8Array {
  const bits = new Uint8Array(Math.ceil(n / 8));
  for (let i = 0; i < n; i++) if (i % 3 !== 1) bits[i >> 3] |= 1 << (i % 8);
  return bits;
}

const field = <T extends arrow.DataType>(name: string, type: T, nullable = true) =>
  new arrow.Field(name, type, nullable);

function unionVector(type: arrow.Union, n: number): arrow.Vector {
  const b = arrow.makeBuilder({ type, nullValues: [null] });
  for (let i = 0; i < n; i++) b.append(i % 2 ? i : `u${i}`, i % 2 ? 0 : 1);
  return b.finish().toVector();
}

function allKinds(n: number): arrow.Table {
  const v = <T extends arrow.DataType>(type: T, f: (i: number) => unknown) =>
    arrow.vectorFromArray(withNulls(n, f), type as arrow.DataType);
  const raw = <T extends arrow.DataType>(type: T, data: ArrayLike<number>) =>
    arrow.makeVector(arrow.makeData({ type, length: n, nullBitmap: nullBitmap(n), data } as never) as arrow.Data<T>);
  const words = ['alpha', 'beta', 'gamma', 'delta'];
  const columns: Record<string, arrow.Vector> = {
    null: arrow.makeVector(arrow.makeData({ type: new arrow.Null(), length: n })),
    bool: v(new arrow.Bool(), (i) => i % 2 === 0),
    int8: v(new arrow.Int8(), (i) => i - 60),
    int16: v(new arrow.Int16(), (i) => i * -300),
    int32: v(new arrow.Int32(), (i) => i * 100_000),
    int64: v(new arrow.Int64(), (i) => BigInt(i) * -(10n ** 15n)),
    uint8: v(new arrow.Uint8(), (i) => i % 256),
    uint16: v(new arrow.Uint16(), (i) => i * 500),
    uint32: v(new arrow.Uint32(), (i) => i * 40_000_000),
    uint64: v(new arrow.Uint64(), (i) => BigInt(i) * 10n ** 18n),
    float16: v(new arrow.Float16(), (i) => i / 4),
    float32: v(new arrow.Float32(), (i) => i / 3),
    float64: v(new arrow.Float64(), (i) => Math.PI * i),
    utf8: v(new arrow.Utf8(), (i) => `${words[i % 4]}-${i}-é✓`),
    largeUtf8: v(new arrow.LargeUtf8(), (i) => 'x'.repeat(i % 5)),
    binary: v(new arrow.Binary(), (i) => Uint8Array.from({ length: i % 4 }, (_, k) => i + k)),
    largeBinary: v(new arrow.LargeBinary(), (i) => new Uint8Array([i, 255 - (i % 256)])),
    fixedSizeBinary: v(new arrow.FixedSizeBinary(3), (i) => new Uint8Array([i, i + 1, i + 2])),
    dateDay: v(new arrow.DateDay(), (i) => new Date(Date.UTC(2020, 0, 1 + i))),
    dateMs: v(new arrow.DateMillisecond(), (i) => new Date(Date.UTC(2021, 5, 1 + i))),
    tsSecond: v(new arrow.TimestampSecond(), (i) => 1_600_000_000_000 + i * 1000),
    tsMilli: v(new arrow.TimestampMillisecond('Europe/Paris'), (i) => 1_600_000_000_000 + i),
    tsMicro: v(new arrow.TimestampMicrosecond('UTC'), (i) => 1_600_000_000_000 + i * 7),
    tsNano: v(new arrow.TimestampNanosecond('+05:30'), (i) => 1_600_000_000_000 + i * 11),
    timeSecond: v(new arrow.TimeSecond(), (i) => i * 60),
    timeMilli: v(new arrow.TimeMillisecond(), (i) => i * 1000),
    timeMicro: v(new arrow.TimeMicrosecond(), (i) => BigInt(i) * 1_000_000n),
    timeNano: v(new arrow.TimeNanosecond(), (i) => BigInt(i) * 1_000_000_000n),
    durationMs: v(new arrow.DurationMillisecond(), (i) => BigInt(i) * 1500n),
    durationNs: v(new arrow.DurationNanosecond(), (i) => BigInt(i) - 5n),
    decimal128: raw(
      new arrow.Decimal(2, 20, 128),
      Uint32Array.from({ length: n * 4 }, (_, k) => k * 2654435761),
    ),
    decimal256: raw(
      new arrow.Decimal(-3, 50, 256),
      Uint32Array.from({ length: n * 8 }, (_, k) => k),
    ),
    intervalYM: raw(
      new arrow.IntervalYearMonth(),
      Int32Array.from({ length: n }, (_, k) => k * 13),
    ),
    intervalDT: raw(
      new arrow.IntervalDayTime(),
      Int32Array.from({ length: n * 2 }, (_, k) => k - 9),
    ),
    intervalMDN: raw(
      new arrow.IntervalMonthDayNano(),
      Int32Array.from({ length: n * 4 }, (_, k) => k * 3),
    ),
    list: v(new arrow.List(field('item', new arrow.Int32())), (i) => Array.from({ length: i % 4 }, (_, k) => i * k)),
    largeList: v(new arrow.LargeList(field('item', new arrow.Utf8())), (i) => [`a${i}`, `b${i}`].slice(0, i % 3)),
    fixedSizeList: v(new arrow.FixedSizeList(2, field('item', new arrow.Float64())), (i) => [i, -i]),
    struct: v(
      new arrow.Struct([field('x', new arrow.Int32()), field('y', new arrow.Utf8()), field('z', new arrow.Bool())]),
      (i) => ({
        x: i,
        y: `y${i}`,
        z: i % 4 === 0,
      }),
    ),
    nested: v(
      new arrow.List(field('item', new arrow.Struct([field('k', new arrow.Utf8()), field('v', new arrow.Float32())]))),
      (i) => Array.from({ length: (i % 3) + 1 }, (_, k) => ({ k: `k${k}`, v: i + k / 2 })),
    ),
    map: v(
      new arrow.Map_(
        new arrow.Field(
          'entries',
          new arrow.Struct<{ key: arrow.Utf8; value: arrow.Int32 }>([
            field('key', new arrow.Utf8(), false),
            field('value', new arrow.Int32()),
          ]),
          false,
        ),
      ),
      (i) => new Map(Array.from({ length: i % 3 }, (_, k) => [`k${k}`, i * k] as [string, number])),
    ),
    dictInt8: v(new arrow.Dictionary(new arrow.Utf8(), new arrow.Int8()), (i) => words[i % 4]),
    dictUint16Ordered: v(
      new arrow.Dictionary(new arrow.Utf8(), new arrow.Uint16(), 42, true),
      (i) => words[(i * 3) % 4],
    ),
    dictInt32: v(new arrow.Dictionary(new arrow.Int64(), new arrow.Int32()), (i) => BigInt(i % 5) * 1000n),
    dictInStruct: v(new arrow.Struct([field('d', new arrow.Dictionary(new arrow.Utf8(), new arrow.Uint8()))]), (i) => ({
      d: words[i % 2],
    })),
    sparseUnion: unionVector(
      new arrow.SparseUnion([0, 1], [field('i', new arrow.Int32()), field('s', new arrow.Utf8())]),
      n,
    ),
    denseUnion: unionVector(
      new arrow.DenseUnion([0, 1], [field('i', new arrow.Int32()), field('s', new arrow.Utf8())]),
      n,
    ),
  };
  const t = new arrow.Table(columns);
  const fields = t.schema.fields.map((f) =>
    f.name === 'utf8' ? new arrow.Field(f.name, f.type, f.nullable, new Map([['unit', 'words']])) : f,
  );
  const schema = new arrow.Schema(fields, new Map([['source', 'arrow-codec test']]));
  return new arrow.Table(
    schema,
    t.batches.map((b) => new arrow.RecordBatch(schema, b.data, new Map([['batch', 'first']]))),
  );
}

// ---- comparison ---------------------------------------------------------------

/** A value as comparable JSON: bigints, typed arrays, maps, rows and vectors spelled out. */
function norm(v: unknown): string {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === 'bigint') return `${x}n`;
    if (ArrayBuffer.isView(x)) return Array.from(x as Uint8Array);
    if (x instanceof Map) return [...x];
    return x;
  });
}

function rows(t: arrow.Table, name: string): string[] {
  const col = t.getChild(name)!;
  return Array.from({ length: t.numRows }, (_, i) => norm(col.get(i)));
}

function expectSameTable(got: arrow.Table, want: arrow.Table): void {
  expect(arrow.util.compareSchemas(got.schema, want.schema), `${got.schema} vs ${want.schema}`).toBe(true);
  expect(String(got.schema)).toBe(String(want.schema));
  expect(got.schema.fields.map((f) => [f.name, f.nullable, [...f.metadata]])).toEqual(
    want.schema.fields.map((f) => [f.name, f.nullable, [...f.metadata]]),
  );
  expect([...got.schema.metadata]).toEqual([...want.schema.metadata]);
  expect(got.numRows).toBe(want.numRows);
  expect(got.batches.map((b) => b.numRows)).toEqual(want.batches.map((b) => b.numRows));
  for (const f of want.schema.fields) {
    const g = got.getChild(f.name)!;
    const w = want.getChild(f.name)!;
    expect(rows(got, f.name), f.name).toEqual(rows(want, f.name));
    // arrow-js reports -1 nulls for a sliced Null array; the decoded one knows they are all null.
    // A union's nullCount is the sum over its children, rows of sparse children that no row selects
    // included; the codec drops those, so for unions only the per-row validity below is compared.
    if (f.type.typeId !== arrow.Type.Union) {
      const wantNulls = f.type.typeId === arrow.Type.Null ? want.numRows : w.nullCount;
      expect(g.nullCount, `${f.name} nullCount`).toBe(wantNulls);
    }
    const valid = (c: arrow.Vector) => Array.from({ length: want.numRows }, (_, i) => c.isValid(i));
    expect(valid(g), `${f.name} null positions`).toEqual(valid(w));
  }
}

/** Every buffer view under a Data node, its children and its dictionary. */
function buffersOf(d: arrow.Data, out: ArrayBufferView[] = []): ArrayBufferView[] {
  for (const b of [d.valueOffsets, d.values, d.nullBitmap, d.typeIds] as (ArrayBufferView | undefined)[]) {
    if (b && b.byteLength > 0) out.push(b);
  }
  for (const c of d.children) buffersOf(c, out);
  for (const c of d.dictionary?.data ?? []) buffersOf(c, out);
  return out;
}

function tableBuffers(t: arrow.Table): ArrayBufferView[] {
  return t.batches.flatMap((b) => b.data.children.flatMap((c) => buffersOf(c)));
}

// ---- tests ----------------------------------------------------------------------

describe('Arrow table codec (in-process store)', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  let c: TrellisClient;
  beforeEach(async () => {
    env = await startStore({ size: SEGMENT });
    c = await connect({ socket: env.socket });
  });
  afterEach(async () => {
    await c.close();
    await env.stop();
  });

  async function roundTrip(t: arrow.Table): Promise<arrow.Table> {
    const got = await c.get(await c.put(t));
    expect(got).toBeInstanceOf(arrow.Table);
    return got as arrow.Table;
  }

  it('round-trips every supported column kind, with nulls, schema and metadata', async () => {
    const t = allKinds(50);
    expect(t.numCols).toBe(47);
    const got = await roundTrip(t);
    expectSameTable(got, t);
    // the comparison above is only as good as the data: check it holds nulls and real values
    expect(t.getChild('int32')!.nullCount).toBe(17);
    expect(got.getChild('utf8')!.get(0)).toBe('alpha-0-é✓');
    expect(got.getChild('utf8')!.get(1)).toBeNull();
    expect(got.getChild('int64')!.get(2)).toBe(-2n * 10n ** 15n);
    expect(got.getChild('float16')!.get(3)).toBe(0.75);
    expect(got.getChild('bool')!.get(2)).toBe(true);
    expect(got.getChild('bool')!.get(3)).toBe(false);
    expect(got.getChild('null')!.nullCount).toBe(50);
    expect((got.getChild('tsNano')!.type as arrow.Timestamp).timezone).toBe('+05:30');
    expect(got.getChild('map')!.get(2)!.toJSON()).toEqual({ k0: 0, k1: 2 });
    expect(got.getChild('sparseUnion')!.get(3)).toBe(3);
    expect(got.getChild('denseUnion')!.get(4)).toBe('u4');
    expect(got.batches[0].metadata.get('batch')).toBe('first');
    // a table read from the store (views over read-only shared memory) can be stored again
    expectSameTable(await roundTrip(got.slice(4, 33)), t.slice(4, 33));
  });

  it('decodes dictionary columns with the same dictionary, indices type, id and ordering', async () => {
    const t = allKinds(20);
    const got = await roundTrip(t);
    for (const name of ['dictInt8', 'dictUint16Ordered', 'dictInt32']) {
      const want = t.getChild(name)!;
      const have = got.getChild(name)!;
      const wt = want.type as arrow.Dictionary;
      const ht = have.type as arrow.Dictionary;
      expect(String(ht.indices)).toBe(String(wt.indices));
      expect(ht.id).toBe(wt.id);
      expect(ht.isOrdered).toBe(wt.isOrdered);
      expect(norm(have.data[0].dictionary!.toArray())).toBe(norm(want.data[0].dictionary!.toArray()));
      const indices = (d: arrow.Data) => norm(Array.from(d.values.subarray(0, d.length) as Int32Array));
      expect(indices(have.data[0])).toBe(indices(want.data[0]));
    }
    expect((got.getChild('dictUint16Ordered')!.type as arrow.Dictionary).isOrdered).toBe(true);
    expect(got.getChild('dictInt8')!.data[0].dictionary!.toArray()).toEqual(['alpha', 'gamma', 'delta', 'beta']);
  });

  it('keeps a dictionary shared by several batches shared, and stores it once', async () => {
    const dictionary = arrow.vectorFromArray(['red', 'green', 'blue'], new arrow.Utf8());
    const type = new arrow.Dictionary(new arrow.Utf8(), new arrow.Int16(), 3);
    const schema = new arrow.Schema([field('colour', type)]);
    const batch = (indices: number[]) =>
      new arrow.RecordBatch(
        schema,
        arrow.makeData({
          type: new arrow.Struct(schema.fields),
          length: indices.length,
          nullCount: 0,
          children: [arrow.makeData({ type, length: indices.length, data: Int16Array.from(indices), dictionary })],
        }),
      );
    const t = new arrow.Table(schema, [batch([0, 1, 2, 1]), batch([2, 2, 0])]);
    const enc = encodeArrowTable(t);
    expect((enc.meta.dictionaries as unknown[]).length).toBe(1);
    const got = await roundTrip(t);
    expect(got.getChild('colour')!.toArray()).toEqual(['red', 'green', 'blue', 'green', 'blue', 'blue', 'red']);
    const [d0, d1] = got.batches.map((b) => b.data.children[0].dictionary);
    expect(d0).toBeDefined();
    expect(d1).toBe(d0);
  });

  it('round-trips multi-batch tables', async () => {
    const a = allKinds(30);
    const t = a.concat(allKinds(7), a.slice(5, 26));
    expect(t.batches.length).toBe(3);
    const got = await roundTrip(t);
    expect(got.batches.map((b) => b.numRows)).toEqual([30, 7, 21]);
    expectSameTable(got, t);
  });

  it('round-trips sliced tables at every bit offset and stores only the slice', async () => {
    const t = allKinds(40);
    for (let start = 0; start < 10; start++) {
      const s = t.slice(start, start + 19);
      expectSameTable(await roundTrip(s), s);
    }
    const big = new arrow.Table({
      s: arrow.vectorFromArray(
        Array.from({ length: 10_000 }, (_, i) => `value number ${i}`),
        new arrow.Utf8(),
      ),
      l: arrow.vectorFromArray(
        Array.from({ length: 10_000 }, (_, i) => [i, i + 1, i + 2]),
        new arrow.List(field('item', new arrow.Int32())),
      ),
    });
    const slice = big.slice(5000, 5010);
    expect(encodeArrowTable(slice).size).toBeLessThan(1024);
    expect(encodeArrowTable(big).size).toBeGreaterThan(250_000);
    const got = await roundTrip(slice);
    expect(got.getChild('s')!.toArray()).toEqual(Array.from({ length: 10 }, (_, i) => `value number ${5000 + i}`));
    expect(norm(got.getChild('l')!.get(9))).toBe(norm([5009, 5010, 5011]));
  });

  it('round-trips empty tables: 0 rows, and 0 columns', async () => {
    const zeroRows = allKinds(0);
    expect(zeroRows.numRows).toBe(0);
    const got = await roundTrip(zeroRows);
    expectSameTable(got, zeroRows);
    expect(got.numCols).toBe(zeroRows.numCols);

    const noColumns = new arrow.Table();
    const empty = await roundTrip(noColumns);
    expect(empty.numCols).toBe(0);
    expect(empty.numRows).toBe(0);

    const rowsOnly = new arrow.Table(
      new arrow.Schema([]),
      new arrow.RecordBatch(
        new arrow.Schema([]),
        arrow.makeData({ type: new arrow.Struct([]), length: 5, nullCount: 0, children: [] }),
      ),
    );
    const got3 = await roundTrip(rowsOnly);
    expect([got3.numCols, got3.numRows]).toEqual([0, 5]);

    const emptySlice = allKinds(12).slice(4, 4);
    expectSameTable(await roundTrip(emptySlice), emptySlice);
  });

  it('decodes over the store mapping without copying, every buffer 64-byte aligned', async () => {
    const t1 = allKinds(25);
    const t2 = new arrow.Table({ v: arrow.vectorFromArray(Float64Array.from({ length: 100_000 }, (_, i) => i)) });
    const id1 = await c.put(t1);
    const [g1, g2] = (await c.getMany([id1, await c.put(t2)])) as arrow.Table[];
    const mapping = g1.getChild('float64')!.data[0].values.buffer;
    expect(mapping.byteLength).toBe(SEGMENT);
    // a large table goes through createBlob + seal, a small one inline: both land in the same mapping
    expect(encodeArrowTable(t2).size).toBeGreaterThan(256 * 1024);
    expect(g2.getChild('v')!.data[0].values.buffer).toBe(mapping);
    const views = [...tableBuffers(g1), ...tableBuffers(g2)];
    expect(views.length).toBeGreaterThan(100);
    for (const view of views) {
      expect(view.buffer).toBe(mapping);
      expect(view.byteOffset % 64).toBe(0);
    }
    // the same bytes, seen again through a second get: still views, not copies
    const again = (await c.get(id1)) as arrow.Table;
    const firstViews = tableBuffers(g1);
    tableBuffers(again).forEach((v, i) => {
      expect(v.buffer).toBe(mapping);
      expect(v.byteOffset).toBe(firstViews[i].byteOffset);
    });
    expect(g2.getChild('v')!.get(99_999)).toBe(99_999);
  });

  it('refuses column types it cannot lay out with ERR_UNSUPPORTED naming the column', async () => {
    const t = new arrow.Table({
      ok: arrow.vectorFromArray([1, 2]),
      views: arrow.vectorFromArray(['a', 'b'], new arrow.Utf8View()),
    });
    await expect(c.put(t)).rejects.toMatchObject({
      code: 'ERR_UNSUPPORTED',
      message: expect.stringContaining('"views"'),
    });
    const nested = new arrow.Table({
      s: arrow.vectorFromArray([{ b: new Uint8Array([1]) }], new arrow.Struct([field('b', new arrow.BinaryView())])),
    });
    expect(() => encodeArrowTable(nested)).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));
  });

  it('answers bad metadata with ERR_PROTOCOL, through the store too', async () => {
    const t = allKinds(10);
    const enc = encodeArrowTable(t);
    const blob = new Uint8Array(new ArrayBuffer(enc.size + 64), 64, enc.size);
    enc.write(blob);
    /** Just enough of the metadata's shape to corrupt it. */
    interface Meta {
      format: number;
      numRows: number;
      schema?: { fields: { type: Record<string, unknown> }[]; metadata?: unknown };
      batches: { columns: Record<string, unknown>[] }[];
    }
    const good = JSON.parse(JSON.stringify(enc.meta)) as Meta;
    const record = (meta: unknown): ObjectRecord => ({
      id: 'o0000000000000001',
      typename: 'ArrowTable',
      nbytes: enc.size,
      meta: meta as Record<string, unknown>,
      members: [{ id: 'o0000000000000002', typename: 'Blob', nbytes: enc.size, meta: {}, members: [] }],
    });
    const decode = (meta: unknown) => arrowTableFromRecord(record(meta), () => blob);
    expectSameTable(decode(good), t);

    const index = (name: string) => t.schema.fields.findIndex((f) => f.name === name);
    const col = (m: Meta, name: string) => m.batches[0].columns[index(name)];
    const cases: [string, (m: Meta) => void][] = [
      ['wrong format', (m) => (m.format = 99)],
      ['no schema', (m) => delete m.schema],
      ['unknown type kind', (m) => (m.schema!.fields[1].type.kind = 'Quaternion')],
      ['bad time unit', (m) => (m.schema!.fields[index('timeSecond')].type.unit = 'FORTNIGHT')],
      ['missing column', (m) => m.batches[0].columns.pop()],
      ['numRows mismatch', (m) => (m.numRows = 11)],
      ['buffer past the blob', (m) => (col(m, 'int32').values = [0, enc.size + 64])],
      ['misaligned buffer', (m) => (col(m, 'int32').values = [8, 40])],
      [
        'buffer too short for length',
        (m) => (col(m, 'float64').values = [(col(m, 'float64').values as number[])[0], 8]),
      ],
      ['dictionary out of range', (m) => (col(m, 'dictInt8').dictionary = 9)],
      ['negative length', (m) => (col(m, 'utf8').length = -1)],
      ['missing children', (m) => delete col(m, 'struct').children],
      ['metadata not pairs', (m) => (m.schema!.metadata = [['a']])],
    ];
    for (const [what, corrupt] of cases) {
      const m = structuredClone(good);
      corrupt(m);
      expect(() => decode(m), what).toThrow(TrellisError);
      try {
        decode(m);
      } catch (e) {
        expect((e as TrellisError).code, what).toBe('ERR_PROTOCOL');
      }
    }

    // an ArrowTable object assembled by hand from a blob and bad metadata
    const blobId = await c.putBlob(blob);
    const id = await c.putObject({
      typename: 'ArrowTable',
      meta: { ...good, format: 2 } as Record<string, unknown>,
      members: [blobId],
    });
    await expect(c.get(id)).rejects.toMatchObject({ code: 'ERR_PROTOCOL' });
    const ok = await c.putObject({ typename: 'ArrowTable', meta: { ...good }, members: [blobId] });
    expectSameTable((await c.get(ok)) as arrow.Table, t);
  });
});
