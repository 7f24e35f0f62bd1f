/**
 * Objects put in one process and read in another, through the built package
 * (dist/, as the in-process side is). Each side hashes what it
 * sees and the hashes must agree byte for byte.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as arrow from 'apache-arrow';
import { connect, DTYPES, type DType, type Tensor, type TrellisClient, type TypedArray } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runChild, startStore } from './helpers/store.js';

/** The ESM entry of apache-arrow, the same module instance dist/ imports. */
const ARROW_URL = (() => {
  const dir = join(ROOT, 'node_modules/apache-arrow');
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  return pathToFileURL(join(dir, pkg.exports['.'].node.import.default)).href;
})();

/**
 * Shared by both processes as source text so that both run the same code:
 * `buildTable(arrow)` makes a two-batch table with every column kind the codec
 * supports (nulls in every third row), `digestTable(createHash, table)` sums a
 * table up as its schema, batch lengths, per-column values as JSON, and a
 * sha256 of the bytes of every buffer of every column.
 */
const SHARED_SRC = `
function buildTable(arrow) {
  const n = 40;
  const F = (name, type, nullable = true) => new arrow.Field(name, type, nullable);
  const nulls = (f) => Array.from({ length: n }, (_, i) => (i % 3 === 1 ? null : f(i)));
  const bitmap = () => { const b = new Uint8Array(Math.ceil(n / 8)); for (let i = 0; i < n; i++) if (i % 3 !== 1) b[i >> 3] |= 1 << (i % 8); return b; };
  const v = (type, f) => arrow.vectorFromArray(nulls(f), type);
  const raw = (type, data) => arrow.makeVector(arrow.makeData({ type, length: n, nullBitmap: bitmap(), data }));
  const union = (type) => { const b = arrow.makeBuilder({ type, nullValues: [null] }); for (let i = 0; i < n; i++) b.append(i % 2 ? i : 'u' + i, i % 2 ? 0 : 1); return b.finish().toVector(); };
  const words = ['alpha', 'beta', 'gamma', 'delta'];
  const t = new arrow.Table({
    null: arrow.makeVector(arrow.makeData({ type: new arrow.Null(), length: n })),
    bool: v(new arrow.Bool(), (i) => i % 2 === 0),
    int8: v(new arrow.Int8(), (i) => i - 60),
    int16: v(new arrow.Int16(), (i) => -300 * i),
    int32: v(new arrow.Int32(), (i) => 100000 * i),
    int64: v(new arrow.Int64(), (i) => BigInt(i) * -(10n ** 15n)),
    uint8: v(new arrow.Uint8(), (i) => i),
    uint16: v(new arrow.Uint16(), (i) => 500 * i),
    uint32: v(new arrow.Uint32(), (i) => 40000000 * i),
    uint64: v(new arrow.Uint64(), (i) => BigInt(i) * 10n ** 18n),
    float16: v(new arrow.Float16(), (i) => i / 4),
    float32: v(new arrow.Float32(), (i) => i / 3),
    float64: v(new arrow.Float64(), (i) => Math.PI * i),
    utf8: v(new arrow.Utf8(), (i) => words[i % 4] + '-' + i + '-é✓'),
    largeUtf8: v(new arrow.LargeUtf8(), (i) => 'x'.repeat(i % 5)),
    binary: v(new arrow.Binary(), (i) => Uint8Array.from({ length: i % 4 }, (_, k) => i + k)),
    largeBinary: v(new arrow.LargeBinary(), (i) => new Uint8Array([i, 255 - i])),
    fixedSizeBinary: v(new arrow.FixedSizeBinary(3), (i) => new Uint8Array([i, i + 1, i + 2])),
    dateDay: v(new arrow.DateDay(), (i) => new Date(Date.UTC(2020, 0, 1 + i))),
    dateMs: v(new arrow.DateMillisecond(), (i) => new Date(Date.UTC(2021, 5, 1 + i))),
    tsSecond: v(new arrow.TimestampSecond(), (i) => 1600000000000 + 1000 * i),
    tsMilli: v(new arrow.TimestampMillisecond('Europe/Paris'), (i) => 1600000000000 + i),
    tsMicro: v(new arrow.TimestampMicrosecond('UTC'), (i) => 1600000000000 + 7 * i),
    tsNano: v(new arrow.TimestampNanosecond('+05:30'), (i) => 1600000000000 + 11 * i),
    timeSecond: v(new arrow.TimeSecond(), (i) => 60 * i),
    timeMilli: v(new arrow.TimeMillisecond(), (i) => 1000 * i),
    timeMicro: v(new arrow.TimeMicrosecond(), (i) => BigInt(i) * 1000000n),
    timeNano: v(new arrow.TimeNanosecond(), (i) => BigInt(i) * 1000000000n),
    duration: v(new arrow.DurationMicrosecond(), (i) => BigInt(i) * 1500n),
    decimal: raw(new arrow.Decimal(2, 20, 128), Uint32Array.from({ length: 4 * n }, (_, k) => k * 2654435761)),
    intervalYM: raw(new arrow.IntervalYearMonth(), Int32Array.from({ length: n }, (_, k) => 13 * k)),
    intervalDT: raw(new arrow.IntervalDayTime(), Int32Array.from({ length: 2 * n }, (_, k) => k - 9)),
    intervalMDN: raw(new arrow.IntervalMonthDayNano(), Int32Array.from({ length: 4 * n }, (_, k) => 3 * k)),
    list: v(new arrow.List(F('item', new arrow.Int32())), (i) => Array.from({ length: i % 4 }, (_, k) => i * k)),
    largeList: v(new arrow.LargeList(F('item', new arrow.Utf8())), (i) => ['a' + i, 'b' + i].slice(0, i % 3)),
    fixedSizeList: v(new arrow.FixedSizeList(2, F('item', new arrow.Float64())), (i) => [i, -i]),
    struct: v(new arrow.Struct([F('x', new arrow.Int32()), F('y', new arrow.Utf8())]), (i) => ({ x: i, y: 'y' + i })),
    map: v(new arrow.Map_(F('entries', new arrow.Struct([F('key', new arrow.Utf8(), false), F('value', new arrow.Int32())]))),
      (i) => new Map(Array.from({ length: i % 3 }, (_, k) => ['k' + k, i * k]))),
    dictInt8: v(new arrow.Dictionary(new arrow.Utf8(), new arrow.Int8()), (i) => words[i % 4]),
    dictUint16Ordered: v(new arrow.Dictionary(new arrow.Utf8(), new arrow.Uint16(), 42, true), (i) => words[(3 * i) % 4]),
    dictInt32: v(new arrow.Dictionary(new arrow.Float64(), new arrow.Int32()), (i) => (i % 5) / 2),
    sparseUnion: union(new arrow.SparseUnion([0, 1], [F('i', new arrow.Int32()), F('s', new arrow.Utf8())])),
    denseUnion: union(new arrow.DenseUnion([0, 1], [F('i', new arrow.Int32()), F('s', new arrow.Utf8())])),
  });
  return t.concat(t.slice(3, 17));
}

function digestTable(createHash, table) {
  const norm = (v) => JSON.stringify(v, (_k, x) =>
    typeof x === 'bigint' ? x + 'n' : ArrayBuffer.isView(x) ? Array.from(x) : x instanceof Map ? [...x] : x);
  const hashData = (h, d) => {
    h.update(d.length + '@' + d.offset + ':');
    for (const b of [d.valueOffsets, d.values, d.nullBitmap, d.typeIds]) {
      if (b) h.update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
      h.update('|');
    }
    for (const c of d.children ?? []) hashData(h, c);
    for (const c of d.dictionary?.data ?? []) hashData(h, c);
  };
  return {
    schema: String(table.schema),
    numRows: table.numRows,
    batches: table.batches.map((b) => b.numRows),
    columns: table.schema.fields.map((f) => {
      const col = table.getChild(f.name);
      const h = createHash('sha256');
      for (const d of col.data) hashData(h, d);
      return {
        name: f.name,
        valid: Array.from({ length: table.numRows }, (_, i) => (col.isValid(i) ? 1 : 0)).join(''),
        values: Array.from({ length: table.numRows }, (_, i) => norm(col.get(i))),
        bytes: h.digest('hex'),
      };
    }),
  };
}`;

interface TableDigest {
  schema: string;
  numRows: number;
  batches: number[];
  columns: { name: string; valid: string; values: string[]; bytes: string }[];
}

const shared = new Function(`${SHARED_SRC}\nreturn { buildTable, digestTable };`)() as {
  buildTable: (a: typeof arrow) => arrow.Table;
  digestTable: (h: typeof createHash, t: arrow.Table) => TableDigest;
};
const digest = (t: arrow.Table) => shared.digestTable(createHash, t);
/** What a table holds, leaving out how its buffers are laid out (the codec trims sliced buffers). */
const logical = (d: TableDigest) => ({ ...d, columns: d.columns.map(({ bytes: _, ...rest }) => rest) });

const sha = (v: ArrayBufferView) =>
  createHash('sha256')
    .update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    .digest('hex');

interface TensorCase {
  dtype: DType;
  shape: number[];
}

/** One case per dtype, then the shapes with edge cases: 0-d, empty, and one past the inline limit. */
const TENSOR_CASES: Record<string, TensorCase> = {
  ...Object.fromEntries(Object.keys(DTYPES).map((dtype) => [dtype, { dtype: dtype as DType, shape: [3, 5] }])),
  scalar: { dtype: 'float64', shape: [] },
  empty: { dtype: 'int32', shape: [0] },
  emptyRows: { dtype: 'uint16', shape: [3, 0] },
  large: { dtype: 'float32', shape: [512, 300] }, // 600 KiB: create + seal, not inline
};

/** Random contents (any bit pattern, NaNs included) except bool, which holds 0 or 1. */
function randomTensor({ dtype, shape }: TensorCase): Tensor {
  const ctor = DTYPES[dtype] as unknown as { new (b: ArrayBuffer): TypedArray; BYTES_PER_ELEMENT: number };
  const n = shape.reduce((a, b) => a * b, 1);
  const bytes = randomBytes(n * ctor.BYTES_PER_ELEMENT);
  if (dtype === 'bool') for (let i = 0; i < bytes.length; i++) bytes[i] &= 1;
  const buf = new ArrayBuffer(bytes.length);
  new Uint8Array(buf).set(bytes);
  return { dtype, shape, data: new ctor(buf) };
}

/** The child's side of a get: what each object looks like from there. */
const CHILD_GET = `
import { createHash } from 'node:crypto';
${SHARED_SRC}
const sha = (v) => createHash('sha256').update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)).digest('hex');
const ids = JSON.parse(process.env.IDS);
const c = await connect({ socket: process.env.SOCK });
const out = { tensors: {}, blobs: {}, tables: {} };
for (const [name, id] of Object.entries(ids.tensors)) {
  const t = await c.get(id);
  out.tensors[name] = { dtype: t.dtype, shape: t.shape, ctor: t.data.constructor.name, length: t.data.length, sha: sha(t.data) };
}
for (const [name, id] of Object.entries(ids.blobs)) {
  const b = await c.getBlob(id);
  out.blobs[name] = { size: b.byteLength, sha: sha(b) };
}
for (const [name, id] of Object.entries(ids.tables)) out.tables[name] = digestTable(createHash, await c.get(id));
await c.close();
console.log(JSON.stringify(out));
`;

describe('objects cross process boundaries byte for byte', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  let c: TrellisClient;
  beforeAll(async () => {
    env = await startStore();
    c = await connect({ socket: env.socket });
  });
  afterAll(async () => {
    await c.close();
    await env.stop();
  });

  it('covers every dtype: edge values put here read back byte for byte in another process', async () => {
    // Each row: the dtype's elements written as raw bit patterns, so NaN payloads, -0, infinities,
    // subnormals and the integer extremes are pinned down bit for bit.
    const EDGES: Record<DType, ArrayBufferLike> = {
      bool: new Uint8Array([0, 1, 1, 0]).buffer,
      int8: new Int8Array([-128, -1, 0, 127]).buffer,
      int16: new Int16Array([-32768, -1, 0, 32767]).buffer,
      int32: new Int32Array([-(2 ** 31), -1, 0, 2 ** 31 - 1]).buffer,
      int64: new BigInt64Array([-(2n ** 63n), -1n, 0n, 2n ** 63n - 1n]).buffer,
      uint8: new Uint8Array([0, 1, 128, 255]).buffer,
      uint16: new Uint16Array([0, 1, 32768, 65535]).buffer,
      uint32: new Uint32Array([0, 1, 2 ** 31, 2 ** 32 - 1]).buffer,
      uint64: new BigUint64Array([0n, 1n, 2n ** 63n, 2n ** 64n - 1n]).buffer,
      // half precision: -0, +inf, a NaN with payload, the smallest subnormal
      float16: new Uint16Array([0x8000, 0x7c00, 0x7e01, 0x0001]).buffer,
      float32: new Uint32Array([0x80000000, 0xff800000, 0x7fc00123, 0x00000001]).buffer,
      float64: new BigUint64Array([0x8000000000000000n, 0x7ff0000000000000n, 0x7ff8000000000abcn, 1n]).buffer,
    };
    expect(Object.keys(EDGES).sort()).toEqual(Object.keys(DTYPES).sort());

    const ids: Record<string, string> = {};
    const want: Record<string, { dtype: string; shape: number[]; ctor: string; hex: string }> = {};
    for (const [dtype, buffer] of Object.entries(EDGES) as [DType, ArrayBuffer][]) {
      const Ctor = DTYPES[dtype] as unknown as new (b: ArrayBuffer) => TypedArray;
      ids[dtype] = await c.put({ dtype, shape: [2, 2], data: new Ctor(buffer) });
      want[dtype] = { dtype, shape: [2, 2], ctor: DTYPES[dtype].name, hex: Buffer.from(buffer).toString('hex') };
    }
    const r = await runChild(
      `const c = await connect({ socket: process.env.SOCK });
const out = {};
for (const [name, id] of Object.entries(JSON.parse(process.env.IDS))) {
  const t = await c.get(id);
  const hex = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex');
  out[name] = { dtype: t.dtype, shape: t.shape, ctor: t.data.constructor.name, hex };
}
await c.close();
console.log(JSON.stringify(out));`,
      { SOCK: env.socket, IDS: JSON.stringify(ids) },
    );
    expect(r.stderr).toBe('');
    expect(r.json).toEqual(want);
  });

  it('parent puts, child gets: tensors of every dtype and shape, blobs, Arrow tables', async () => {
    const ids = {
      tensors: {} as Record<string, string>,
      blobs: {} as Record<string, string>,
      tables: {} as Record<string, string>,
    };
    const want: Record<string, { dtype: string; shape: number[]; ctor: string; length: number; sha: string }> = {};
    for (const [name, tc] of Object.entries(TENSOR_CASES)) {
      const t = randomTensor(tc);
      ids.tensors[name] = await c.put(t);
      want[name] = {
        dtype: tc.dtype,
        shape: tc.shape,
        ctor: DTYPES[tc.dtype].name,
        length: t.data.length,
        sha: sha(t.data),
      };
    }
    expect(TENSOR_CASES.large.shape[0] * TENSOR_CASES.large.shape[1] * 4).toBeGreaterThan(256 * 1024);
    // a tensor written in place through createTensor
    const w = await c.createTensor('int16', [64, 64]);
    (w.data as Int16Array).forEach((_, i, a) => {
      a[i] = i * 7 - 9000;
    });
    ids.tensors.inPlace = await w.seal();
    want.inPlace = { dtype: 'int16', shape: [64, 64], ctor: 'Int16Array', length: 4096, sha: sha(w.data) };

    const small = randomBytes(1000);
    const big = randomBytes(300 * 1024);
    ids.blobs.small = await c.putBlob(small);
    ids.blobs.big = await c.putBlob(big);
    const bw = await c.createBlob(70_000);
    bw.buffer.set(randomBytes(70_000));
    const written = Buffer.from(bw.buffer);
    ids.blobs.written = await bw.seal();
    ids.blobs.empty = await c.putBlob(new Uint8Array(0));

    const table = shared.buildTable(arrow);
    expect(table.batches.length).toBe(2);
    expect(table.numCols).toBe(43);
    const sliced = table.slice(5, 50);
    const empty = table.slice(10, 10);
    ids.tables = { table: await c.put(table), sliced: await c.put(sliced), empty: await c.put(empty) };

    const r = await runChild(CHILD_GET, { SOCK: env.socket, IDS: JSON.stringify(ids) });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = r.json as {
      tensors: Record<string, unknown>;
      blobs: Record<string, { size: number; sha: string }>;
      tables: Record<string, TableDigest>;
    };
    expect(got.tensors).toEqual(want);
    expect(got.blobs).toEqual({
      small: { size: 1000, sha: sha(small) },
      big: { size: 300 * 1024, sha: sha(big) },
      written: { size: 70_000, sha: sha(written) },
      empty: { size: 0, sha: sha(new Uint8Array(0)) },
    });
    const originals = { table, sliced, empty };
    for (const [name, id] of Object.entries(ids.tables)) {
      const child = got.tables[name];
      // the values the child reads are the values put
      expect(logical(child), name).toEqual(logical(digest(originals[name as keyof typeof originals])));
      // and the bytes it reads are the bytes this process reads
      expect(child, name).toEqual(digest((await c.get(id)) as arrow.Table));
    }
    expect(got.tables.table.numRows).toBe(54);
    expect(got.tables.table.columns.find((col) => col.name === 'utf8')!.values[0]).toBe('"alpha-0-é✓"');
    expect(got.tables.empty.numRows).toBe(0);
  });

  it('child puts and exits, parent gets', async () => {
    const cases = JSON.stringify(TENSOR_CASES);
    const r = await runChild(
      `
import { createHash, randomBytes } from 'node:crypto';
const arrow = await import(${JSON.stringify(ARROW_URL)});
${SHARED_SRC}
const sha = (v) => createHash('sha256').update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)).digest('hex');
const c = await connect({ socket: process.env.SOCK });
const out = { tensors: {}, blobs: {}, tables: {} };
for (const [name, { dtype, shape }] of Object.entries(${cases})) {
  const Ctor = trellis.DTYPES[dtype];
  const n = shape.reduce((a, b) => a * b, 1);
  const bytes = randomBytes(n * Ctor.BYTES_PER_ELEMENT);
  if (dtype === 'bool') for (let i = 0; i < bytes.length; i++) bytes[i] &= 1;
  const data = new Ctor(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  out.tensors[name] = { id: await c.put({ dtype, shape, data }), dtype, shape, length: n, sha: sha(data) };
}
const blob = randomBytes(300 * 1024);
out.blobs.big = { id: await c.putBlob(blob), size: blob.length, sha: sha(blob) };
const table = buildTable(arrow);
const id = await c.put(table);
const stored = await c.get(id);
out.tables.table = { id, original: digestTable(createHash, table), stored: digestTable(createHash, stored) };
await c.release(id);
await c.close();
console.log(JSON.stringify(out));
`,
      { SOCK: env.socket },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const put = r.json as {
      tensors: Record<string, { id: string; dtype: DType; shape: number[]; length: number; sha: string }>;
      blobs: Record<string, { id: string; size: number; sha: string }>;
      tables: Record<string, { id: string; original: TableDigest; stored: TableDigest }>;
    };
    expect(Object.keys(put.tensors).sort()).toEqual(Object.keys(TENSOR_CASES).sort());
    for (const [name, p] of Object.entries(put.tensors)) {
      const t = (await c.get(p.id)) as Tensor;
      expect(
        { dtype: t.dtype, shape: t.shape, ctor: t.data.constructor.name, length: t.data.length, sha: sha(t.data) },
        name,
      ).toEqual({
        dtype: p.dtype,
        shape: p.shape,
        ctor: DTYPES[p.dtype].name,
        length: p.length,
        sha: p.sha,
      });
    }
    const b = await c.getBlob(put.blobs.big.id);
    expect({ size: b.byteLength, sha: sha(b) }).toEqual({ size: put.blobs.big.size, sha: put.blobs.big.sha });

    const { id, original, stored } = put.tables.table;
    const here = digest((await c.get(id)) as arrow.Table);
    expect(here).toEqual(stored);
    expect(logical(here)).toEqual(logical(original));
    expect(logical(here)).toEqual(logical(digest(shared.buildTable(arrow))));
  });
});
