/**
 * Arrow tables. A table becomes one blob that holds every buffer of every
 * column of every record batch (validity bitmaps, value offsets, values, union
 * type ids, and the buffers of child arrays and of dictionaries), each at a
 * 64-byte aligned offset, plus JSON metadata: the schema, and per batch a tree
 * of Data nodes saying where each buffer sits. `get` rebuilds every Data with
 * arrow.makeData over subviews of the read-only blob, so no column byte is
 * copied.
 *
 * Buffers follow arrow-js's in-memory convention, which differs from the Arrow
 * IPC format in one way that matters here: arrow-js applies `Data.offset` only
 * to bit-addressed buffers (validity bitmaps and Bool values); every other
 * buffer view already starts at the node's first element. Encoding normalises
 * sliced data so a slice stores only what it covers: bitmaps keep the bytes
 * the slice spans (the stored offset is then below 8), value offsets are
 * rebased to start at 0 with their values / list child cut to match, and
 * fixed-width values and children are cut to the node's length. Buffers
 * shorter than the length needs are zero-padded where arrow-js reads a gap as
 * zeros anyway (bitmaps, fixed-width values) and refused with ERR_BAD_REQUEST
 * otherwise (offsets, children), so encode never writes a blob decode rejects.
 *
 * Not supported: Utf8View and BinaryView (their variadic data buffers are not
 * laid out by this codec); they throw ERR_UNSUPPORTED naming the column.
 */
import * as arrow from 'apache-arrow';
import { invalidParameter, TrellisError } from '../errors.js';
import type { ObjectRecord } from '../protocol/records.js';
import { ARROW_TYPENAME, type BlobResolver, type EncodedValue } from './codec.js';

export { ARROW_TYPENAME };

/** Version of the metadata layout below; decode refuses any other. */
const FORMAT = 1;
/** Every buffer starts on this boundary within the blob; the store starts blobs on it too. */
const BUFFER_ALIGN = 64;
/** Bound on type and Data nesting, so that bad metadata cannot exhaust the stack. */
const MAX_DEPTH = 64;

const { Type } = arrow;

export function isArrowTable(v: unknown): v is arrow.Table {
  return v instanceof arrow.Table;
}

// ---- types <-> JSON ---------------------------------------------------------

/** Key/value metadata of a schema, field or batch, in order. */
type Pairs = [string, string][];

interface FieldJSON {
  name: string;
  nullable: boolean;
  type: TypeJSON;
  metadata?: Pairs;
}

/** A DataType as JSON; enum-valued properties (units, precision, mode) are stored by name. */
type TypeJSON =
  | { kind: 'Null' | 'Bool' | 'Utf8' | 'LargeUtf8' | 'Binary' | 'LargeBinary' }
  | { kind: 'Int'; bitWidth: number; signed: boolean }
  | { kind: 'Float'; precision: string }
  | { kind: 'FixedSizeBinary'; byteWidth: number }
  | { kind: 'Date'; unit: string }
  | { kind: 'Time'; unit: string; bitWidth: number }
  | { kind: 'Timestamp'; unit: string; timezone?: string | null }
  | { kind: 'Decimal'; precision: number; scale: number; bitWidth: number }
  | { kind: 'Interval'; unit: string }
  | { kind: 'Duration'; unit: string }
  | { kind: 'List' | 'LargeList'; child: FieldJSON }
  | { kind: 'FixedSizeList'; listSize: number; child: FieldJSON }
  | { kind: 'Struct'; children: FieldJSON[] }
  | { kind: 'Map'; keysSorted: boolean; child: FieldJSON }
  | { kind: 'Union'; mode: string; typeIds: number[]; children: FieldJSON[] }
  | { kind: 'Dictionary'; id: number; isOrdered: boolean; indices: TypeJSON; dictionary: TypeJSON };

type NumericEnum = Record<string, string | number>;

function enumName(e: NumericEnum, value: number): string {
  return String(e[value]);
}

function fieldToJSON(f: arrow.Field, column: string): FieldJSON {
  const out: FieldJSON = { name: f.name, nullable: f.nullable, type: typeToJSON(f.type, column) };
  if (f.metadata.size > 0) out.metadata = [...f.metadata];
  return out;
}

/** Throws ERR_UNSUPPORTED, naming the column, for types this codec does not lay out. */
function typeToJSON(t: arrow.DataType, column: string): TypeJSON {
  const child = (f: arrow.Field) => fieldToJSON(f, `${column}.${f.name}`);
  switch (t.typeId) {
    case Type.Null:
      return { kind: 'Null' };
    case Type.Bool:
      return { kind: 'Bool' };
    case Type.Utf8:
      return { kind: 'Utf8' };
    case Type.LargeUtf8:
      return { kind: 'LargeUtf8' };
    case Type.Binary:
      return { kind: 'Binary' };
    case Type.LargeBinary:
      return { kind: 'LargeBinary' };
    case Type.Int: {
      const i = t as arrow.Int;
      return { kind: 'Int', bitWidth: i.bitWidth, signed: i.isSigned };
    }
    case Type.Float:
      return { kind: 'Float', precision: enumName(arrow.Precision, (t as arrow.Float).precision) };
    case Type.FixedSizeBinary:
      return { kind: 'FixedSizeBinary', byteWidth: (t as arrow.FixedSizeBinary).byteWidth };
    case Type.Date:
      return { kind: 'Date', unit: enumName(arrow.DateUnit, (t as arrow.Date_).unit) };
    case Type.Time: {
      const tt = t as arrow.Time;
      return { kind: 'Time', unit: enumName(arrow.TimeUnit, tt.unit), bitWidth: tt.bitWidth };
    }
    case Type.Timestamp: {
      const ts = t as arrow.Timestamp;
      // arrow tells an absent timezone (undefined) from a null one when comparing types: keep which it was
      const out: TypeJSON = { kind: 'Timestamp', unit: enumName(arrow.TimeUnit, ts.unit) };
      if (ts.timezone !== undefined) out.timezone = ts.timezone;
      return out;
    }
    case Type.Decimal: {
      const d = t as arrow.Decimal;
      return { kind: 'Decimal', precision: d.precision, scale: d.scale, bitWidth: d.bitWidth };
    }
    case Type.Interval:
      return { kind: 'Interval', unit: enumName(arrow.IntervalUnit, (t as arrow.Interval).unit) };
    case Type.Duration:
      return { kind: 'Duration', unit: enumName(arrow.TimeUnit, (t as arrow.Duration).unit) };
    case Type.List:
      return { kind: 'List', child: child(t.children[0]) };
    case Type.LargeList:
      return { kind: 'LargeList', child: child(t.children[0]) };
    case Type.FixedSizeList:
      return { kind: 'FixedSizeList', listSize: (t as arrow.FixedSizeList).listSize, child: child(t.children[0]) };
    case Type.Struct:
      return { kind: 'Struct', children: t.children.map(child) };
    case Type.Map:
      return { kind: 'Map', keysSorted: (t as arrow.Map_).keysSorted, child: child(t.children[0]) };
    case Type.Union: {
      const u = t as arrow.Union;
      return {
        kind: 'Union',
        mode: enumName(arrow.UnionMode, u.mode),
        typeIds: Array.from(u.typeIds),
        children: u.children.map(child),
      };
    }
    case Type.Dictionary: {
      const d = t as arrow.Dictionary;
      return {
        kind: 'Dictionary',
        id: d.id,
        isOrdered: d.isOrdered,
        indices: typeToJSON(d.indices, column),
        dictionary: typeToJSON(d.dictionary, column),
      };
    }
    default:
      throw new TrellisError(
        'ERR_UNSUPPORTED',
        `column ${JSON.stringify(column)} has Arrow type ${String(t)}, which the ${ARROW_TYPENAME} codec does not support`,
      );
  }
}

function bad(where: string, expected: string, got?: unknown): TrellisError {
  const seen = got === undefined ? '' : `, got ${JSON.stringify(got)?.slice(0, 60) ?? typeof got}`;
  return new TrellisError('ERR_PROTOCOL', `bad metadata at ${where}: expected ${expected}${seen}`);
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(where, 'an object', v);
  return v as Record<string, unknown>;
}

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) throw bad(where, 'an array', v);
  return v;
}

function int(v: unknown, where: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw bad(where, `an integer in [${min}, ${max}]`, v);
  }
  return v;
}

function flag(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw bad(where, 'a boolean', v);
  return v;
}

function text(v: unknown, where: string): string {
  if (typeof v !== 'string') throw bad(where, 'a string', v);
  return v;
}

function pairs(v: unknown, where: string): Map<string, string> {
  const out = new Map<string, string>();
  if (v === undefined) return out;
  list(v, where).forEach((p, i) => {
    if (!Array.isArray(p) || p.length !== 2) throw bad(`${where}[${i}]`, 'a [key, value] pair', p);
    out.set(text(p[0], `${where}[${i}][0]`), text(p[1], `${where}[${i}][1]`));
  });
  return out;
}

/** The value of an enum member given by name. */
function enumValue(e: NumericEnum, v: unknown, where: string): number {
  const value = typeof v === 'string' && Object.hasOwn(e, v) ? e[v] : undefined;
  if (typeof value !== 'number') {
    const names = Object.keys(e).filter((k) => typeof e[k] === 'number');
    throw bad(where, `one of ${names.join(', ')}`, v);
  }
  return value;
}

function fieldFromJSON(v: unknown, where: string, depth: number): arrow.Field {
  const j = obj(v, where);
  return new arrow.Field(
    text(j.name, `${where}.name`),
    typeFromJSON(j.type, `${where}.type`, depth + 1),
    flag(j.nullable, `${where}.nullable`),
    pairs(j.metadata, `${where}.metadata`),
  );
}

// Concrete classes by enum value, so decoded types are the same classes arrow's builders make.
const SIGNED = { 8: arrow.Int8, 16: arrow.Int16, 32: arrow.Int32, 64: arrow.Int64 } as const;
const UNSIGNED = { 8: arrow.Uint8, 16: arrow.Uint16, 32: arrow.Uint32, 64: arrow.Uint64 } as const;
const FLOATS = [arrow.Float16, arrow.Float32, arrow.Float64] as const;
const TIMESTAMPS = [
  arrow.TimestampSecond,
  arrow.TimestampMillisecond,
  arrow.TimestampMicrosecond,
  arrow.TimestampNanosecond,
] as const;
const TIMES = [arrow.TimeSecond, arrow.TimeMillisecond, arrow.TimeMicrosecond, arrow.TimeNanosecond] as const;
const DURATIONS = [
  arrow.DurationSecond,
  arrow.DurationMillisecond,
  arrow.DurationMicrosecond,
  arrow.DurationNanosecond,
] as const;
const INTERVALS = {
  [arrow.IntervalUnit.YEAR_MONTH]: arrow.IntervalYearMonth,
  [arrow.IntervalUnit.DAY_TIME]: arrow.IntervalDayTime,
  [arrow.IntervalUnit.MONTH_DAY_NANO]: arrow.IntervalMonthDayNano,
} as const;

function typeFromJSON(v: unknown, where: string, depth: number): arrow.DataType {
  if (depth > MAX_DEPTH) throw bad(where, `types nested at most ${MAX_DEPTH} deep`);
  const j = obj(v, where);
  const at = (k: string) => `${where}.${k}`;
  const child = () => fieldFromJSON(j.child, at('child'), depth);
  const children = () =>
    list(j.children, at('children')).map((c, i) => fieldFromJSON(c, `${where}.children[${i}]`, depth));
  switch (j.kind) {
    case 'Null':
      return new arrow.Null();
    case 'Bool':
      return new arrow.Bool();
    case 'Utf8':
      return new arrow.Utf8();
    case 'LargeUtf8':
      return new arrow.LargeUtf8();
    case 'Binary':
      return new arrow.Binary();
    case 'LargeBinary':
      return new arrow.LargeBinary();
    case 'Int': {
      const bits = int(j.bitWidth, at('bitWidth'), 8, 64);
      const table: Record<number, new () => arrow.DataType> = flag(j.signed, at('signed')) ? SIGNED : UNSIGNED;
      if (!table[bits]) throw bad(at('bitWidth'), '8, 16, 32 or 64', bits);
      return new table[bits]();
    }
    case 'Float':
      return new FLOATS[enumValue(arrow.Precision, j.precision, at('precision'))]();
    case 'FixedSizeBinary':
      return new arrow.FixedSizeBinary(int(j.byteWidth, at('byteWidth'), 1));
    case 'Date':
      return enumValue(arrow.DateUnit, j.unit, at('unit')) === arrow.DateUnit.DAY
        ? new arrow.DateDay()
        : new arrow.DateMillisecond();
    case 'Time': {
      const unit = enumValue(arrow.TimeUnit, j.unit, at('unit'));
      const bits = int(j.bitWidth, at('bitWidth'));
      if (bits !== 32 && bits !== 64) throw bad(at('bitWidth'), '32 or 64', bits);
      const canonical = new TIMES[unit]();
      return canonical.bitWidth === bits ? canonical : new arrow.Time(unit, bits);
    }
    case 'Timestamp': {
      const tz = j.timezone === undefined || j.timezone === null ? j.timezone : text(j.timezone, at('timezone'));
      return new TIMESTAMPS[enumValue(arrow.TimeUnit, j.unit, at('unit'))](tz);
    }
    case 'Decimal': {
      const bits = int(j.bitWidth, at('bitWidth'));
      if (![32, 64, 128, 256].includes(bits)) throw bad(at('bitWidth'), '32, 64, 128 or 256', bits);
      const scale = int(j.scale, at('scale'), -(2 ** 31), 2 ** 31);
      return new arrow.Decimal(scale, int(j.precision, at('precision'), 1), bits);
    }
    case 'Interval':
      return new INTERVALS[enumValue(arrow.IntervalUnit, j.unit, at('unit')) as arrow.IntervalUnit]();
    case 'Duration':
      return new DURATIONS[enumValue(arrow.TimeUnit, j.unit, at('unit'))]();
    case 'List':
      return new arrow.List(child());
    case 'LargeList':
      return new arrow.LargeList(child());
    case 'FixedSizeList':
      return new arrow.FixedSizeList(int(j.listSize, at('listSize')), child());
    case 'Struct':
      return new arrow.Struct(children());
    case 'Map': {
      const entries = child();
      if (entries.type.typeId !== Type.Struct || entries.type.children.length !== 2) {
        throw bad(at('child'), 'a struct of key and value');
      }
      return new arrow.Map_(entries as arrow.Field<arrow.Struct>, flag(j.keysSorted, at('keysSorted')));
    }
    case 'Union': {
      const fields = children();
      const ids = list(j.typeIds, at('typeIds')).map((id, i) => int(id, `${where}.typeIds[${i}]`, 0, 127));
      if (ids.length !== fields.length) throw bad(at('typeIds'), `${fields.length} type ids, one per child`, ids);
      return enumValue(arrow.UnionMode, j.mode, at('mode')) === arrow.UnionMode.Dense
        ? new arrow.DenseUnion(ids, fields)
        : new arrow.SparseUnion(ids, fields);
    }
    case 'Dictionary': {
      const indices = typeFromJSON(j.indices, at('indices'), depth + 1);
      if (indices.typeId !== Type.Int) throw bad(at('indices'), 'an integer type', j.indices);
      const values = typeFromJSON(j.dictionary, at('dictionary'), depth + 1);
      const id = int(j.id, at('id'), -(2 ** 31));
      // (the cast only satisfies arrow's generic key type: any Int was accepted above)
      return new arrow.Dictionary(values, indices as arrow.Int32, id, flag(j.isOrdered, at('isOrdered')));
    }
    default:
      throw bad(at('kind'), 'a supported Arrow type name', j.kind);
  }
}

// ---- layout -----------------------------------------------------------------

/** Where one buffer sits in the blob: [byte offset (a multiple of 64), byte length]. */
type BufferRef = [number, number];

/**
 * One arrow Data node as stored. Its type is not repeated: it follows from the
 * schema (a child's from its parent's type, a dictionary chunk's from the
 * dictionary's value type). Empty or missing buffers are left out.
 */
interface NodeJSON {
  length: number;
  nullCount: number;
  /** Bit offset into `validity` and Bool `values`; always below 8 once stored. */
  offset: number;
  validity?: BufferRef;
  offsets?: BufferRef;
  values?: BufferRef;
  typeIds?: BufferRef;
  children?: NodeJSON[];
  /** Index into ArrowMeta.dictionaries, for Dictionary nodes. */
  dictionary?: number;
}

interface BatchJSON {
  length: number;
  /** One node per schema field. */
  columns: NodeJSON[];
  metadata?: Pairs;
}

interface ArrowMeta {
  format: number;
  schema: { fields: FieldJSON[]; metadata?: Pairs };
  numRows: number;
  batches: BatchJSON[];
  /** Each distinct dictionary Vector once, as its chunks; batches that shared one still share it. */
  dictionaries: { chunks: NodeJSON[] }[];
}

function alignUp(n: number): number {
  return Math.ceil(n / BUFFER_ALIGN) * BUFFER_ALIGN;
}

type OffsetArray = Int32Array | BigInt64Array;

function hasLargeOffsets(t: arrow.DataType): boolean {
  return t.typeId === Type.LargeUtf8 || t.typeId === Type.LargeBinary || t.typeId === Type.LargeList;
}

/** Elements per value in the values buffer of a fixed-width type (arrow's `stride`). */
function strideOf(t: arrow.DataType): number {
  switch (t.typeId) {
    case Type.Decimal:
      return (t as arrow.Decimal).bitWidth / 32;
    case Type.Interval: {
      const unit = (t as arrow.Interval).unit;
      return unit === arrow.IntervalUnit.MONTH_DAY_NANO ? 4 : unit === arrow.IntervalUnit.DAY_TIME ? 2 : 1;
    }
    case Type.FixedSizeBinary:
      return (t as arrow.FixedSizeBinary).byteWidth;
    default:
      return 1;
  }
}

/** The child fields a node of this type has child nodes for (a Dictionary's live in its dictionary). */
function childFields(t: arrow.DataType): arrow.Field[] {
  switch (t.typeId) {
    case Type.List:
    case Type.LargeList:
    case Type.FixedSizeList:
    case Type.Map:
    case Type.Struct:
    case Type.Union:
      return t.children;
    default:
      return [];
  }
}

function isFixedWidth(t: arrow.DataType): boolean {
  switch (t.typeId) {
    case Type.Int:
    case Type.Float:
    case Type.Date:
    case Type.Time:
    case Type.Timestamp:
    case Type.Decimal:
    case Type.Interval:
    case Type.Duration:
    case Type.FixedSizeBinary:
      return true;
    default:
      return false;
  }
}

/** The first `n` elements of a typed array, or all of it when shorter. */
function head<T extends { length: number; subarray(begin: number, end: number): T }>(a: T | undefined, n: number) {
  return a && a.length > n ? a.subarray(0, n) : a;
}

/** The first `n` rows of a child Data. */
function headRows(d: arrow.Data, n: number): arrow.Data {
  return d.length > n ? d.slice(0, n) : d;
}

/** The bytes of a bitmap that bits [offset, offset + length) live in. */
function bitBytes(bitmap: Uint8Array | undefined, offset: number, length: number): Uint8Array | undefined {
  return bitmap?.subarray(offset >> 3, (offset + length + 7) >> 3);
}

/** A buffer at least `minBytes` long: the view itself, or a zero-padded copy of it. */
function padded(view: ArrayBufferView | undefined, minBytes: number): ArrayBufferView | undefined {
  if ((view?.byteLength ?? 0) >= minBytes) return view;
  const out = new Uint8Array(minBytes);
  if (view) out.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  return out;
}

/** For each child of a sparse union, how many rows it must hold: one past the last row that selects it. */
function sparseRowsUsed(type: arrow.Union, typeIds: Int8Array): number[] {
  const used = type.children.map(() => 0);
  for (let row = 0; row < typeIds.length; row++) {
    const child = type.typeIdToChildIndex[typeIds[row]];
    if (child !== undefined) used[child] = row + 1;
  }
  return used;
}

/** Value offsets of a variable-length node rebased to start at 0, and the range of values they cover. */
function valueRange(d: arrow.Data, column: string): { offsets: OffsetArray; begin: number; end: number } {
  const large = hasLargeOffsets(d.type);
  const n = d.length;
  if (n === 0) return { offsets: large ? new BigInt64Array(1) : new Int32Array(1), begin: 0, end: 0 };
  const all = d.valueOffsets as OffsetArray | undefined;
  if (!all || all.length < n + 1) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `column ${JSON.stringify(column)}: ${all?.length ?? 0} value offsets for ${n} values`,
    );
  }
  const window = all.subarray(0, n + 1);
  const begin = Number(window[0]);
  const end = Number(window[n]);
  if (begin < 0 || end < begin) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `column ${JSON.stringify(column)}: value offsets run from ${begin} to ${end}`,
    );
  }
  if (begin === 0) return { offsets: window, begin, end };
  const offsets =
    window instanceof BigInt64Array ? window.map((x) => x - (window[0] as bigint)) : window.map((x) => x - begin);
  return { offsets, begin, end };
}

/** makeData with props assembled per type at run time, which arrow's overloads cannot follow. */
const makeData = arrow.makeData as unknown as (props: Record<string, unknown>) => arrow.Data;

/** A 0-row Data of a type, with (empty) children and dictionary all the way down. */
function emptyData(type: arrow.DataType): arrow.Data {
  const props: Record<string, unknown> = { type, length: 0, nullCount: 0 };
  const children = childFields(type).map((f) => emptyData(f.type));
  if (type.typeId === Type.Struct || type.typeId === Type.Union) props.children = children;
  else if (children.length === 1) props.child = children[0];
  if (type.typeId === Type.Dictionary) {
    props.dictionary = new arrow.Vector([emptyData((type as arrow.Dictionary).dictionary)]);
  }
  return makeData(props);
}

/** Plans where each buffer goes in the blob while describing the table's Data nodes. */
class LayoutWriter {
  size = 0;
  readonly dictionaries: ArrowMeta['dictionaries'] = [];
  private readonly parts: { off: number; bytes: Uint8Array }[] = [];
  private readonly dictionaryIndex = new Map<arrow.Vector, number>();

  /** Gives a buffer the next aligned place; empty or missing buffers take none. */
  private place(view: ArrayBufferView | undefined): BufferRef | undefined {
    if (!view || view.byteLength === 0) return undefined;
    const off = alignUp(this.size);
    this.parts.push({ off, bytes: new Uint8Array(view.buffer, view.byteOffset, view.byteLength) });
    this.size = off + view.byteLength;
    return [off, view.byteLength];
  }

  write(dst: Uint8Array): void {
    let end = 0;
    for (const { off, bytes } of this.parts) {
      dst.fill(0, end, off); // padding: the arena may hand out memory another object used
      dst.set(bytes, off);
      end = off + bytes.byteLength;
    }
  }

  /**
   * Describes one Data node, placing its buffers. `type` is what the schema
   * says the node holds; the node's own type must agree with it.
   */
  node(d: arrow.Data, type: arrow.DataType, column: string): NodeJSON {
    if (d.type.typeId !== type.typeId) {
      throw new TrellisError(
        'ERR_BAD_REQUEST',
        `column ${JSON.stringify(column)} holds ${String(d.type)} data where its type is ${String(type)}`,
      );
    }
    const { length } = d;
    const isNull = type.typeId === Type.Null;
    // arrow-js reports -1 nulls for a sliced Null array; every value of one is null
    const out: NodeJSON = { length, nullCount: isNull ? length : d.nullCount, offset: isNull ? 0 : d.offset % 8 };
    /** Places a buffer; one shorter than `minBytes` is zero-padded, which reads the same in arrow-js. */
    const set = (
      key: 'validity' | 'offsets' | 'values' | 'typeIds',
      view: ArrayBufferView | undefined,
      minBytes = 0,
    ) => {
      const ref = this.place(padded(view, minBytes));
      if (ref) out[key] = ref;
    };
    const bitmapBytes = (d.offset % 8) + length > 0 ? ((d.offset % 8) + length + 7) >> 3 : 0;
    const fields = childFields(type);
    // arrow's builders leave `children` unset on some empty arrays
    const kids: (arrow.Data | undefined)[] = d.children ?? [];
    /** Lays out child i, which must hold at least `rows` rows; a missing child stands for an empty one. */
    const child = (c: arrow.Data | undefined, i: number, rows: number): NodeJSON => {
      const name = `${column}.${fields[i].name}`;
      if ((c?.length ?? 0) < rows) {
        throw new TrellisError(
          'ERR_BAD_REQUEST',
          `column ${JSON.stringify(name)} has ${c?.length ?? 0} of ${rows} rows`,
        );
      }
      return this.node(c ?? emptyData(fields[i].type), fields[i].type, name);
    };
    if (out.nullCount !== 0 && !isNull && type.typeId !== Type.Union) {
      set('validity', bitBytes(d.nullBitmap, d.offset, length), length > 0 ? bitmapBytes : 0);
    }
    switch (type.typeId) {
      case Type.Null:
        break;
      case Type.Bool:
        set('values', bitBytes(d.values, d.offset, length), length > 0 ? bitmapBytes : 0);
        break;
      case Type.Dictionary:
        set('values', head(d.values, length), length * (type as arrow.Dictionary).indices.ArrayType.BYTES_PER_ELEMENT);
        // an empty dictionary column from arrow's builder has no dictionary at all
        out.dictionary = this.dictionary(
          d.dictionary ?? (length === 0 ? emptyData(type).dictionary : undefined),
          type as arrow.Dictionary,
          column,
        );
        break;
      case Type.Utf8:
      case Type.LargeUtf8:
      case Type.Binary:
      case Type.LargeBinary: {
        const { offsets, begin, end } = valueRange(d, column);
        const values = d.values as Uint8Array | undefined;
        if ((values?.length ?? 0) < end) {
          throw new TrellisError(
            'ERR_BAD_REQUEST',
            `column ${JSON.stringify(column)}: value offsets reach byte ${end} of ${values?.length ?? 0}`,
          );
        }
        set('offsets', offsets);
        set('values', values?.subarray(begin, end));
        break;
      }
      case Type.List:
      case Type.LargeList:
      case Type.Map: {
        const { offsets, begin, end } = valueRange(d, column);
        set('offsets', offsets);
        const values = kids[0];
        if ((values?.length ?? 0) < end) {
          throw new TrellisError(
            'ERR_BAD_REQUEST',
            `column ${JSON.stringify(column)}: value offsets reach row ${end} of ${values?.length ?? 0}`,
          );
        }
        const covered = values && (begin > 0 || end < values.length) ? values.slice(begin, end - begin) : values;
        out.children = [child(covered, 0, end - begin)];
        break;
      }
      case Type.FixedSizeList: {
        const rows = length * (type as arrow.FixedSizeList).listSize;
        out.children = [child(kids[0] && headRows(kids[0], rows), 0, rows)];
        break;
      }
      case Type.Struct:
        out.children = fields.map((_, i) => child(kids[i] && headRows(kids[i], length), i, length));
        break;
      case Type.Union: {
        const union = type as arrow.Union;
        const typeIds = head(d.typeIds as Int8Array | undefined, length);
        if ((typeIds?.length ?? 0) < length) {
          throw new TrellisError('ERR_BAD_REQUEST', `column ${JSON.stringify(column)}: too few union type ids`);
        }
        set('typeIds', typeIds);
        if (union.mode === arrow.UnionMode.Dense) {
          // Dense children are addressed through the value offsets, so they stay whole.
          const offsets = head(d.valueOffsets as Int32Array | undefined, length);
          if ((offsets?.length ?? 0) < length) {
            throw new TrellisError('ERR_BAD_REQUEST', `column ${JSON.stringify(column)}: too few union value offsets`);
          }
          set('offsets', offsets);
          out.children = fields.map((_, i) => child(kids[i], i, 0));
        } else {
          // arrow-js's builder leaves a sparse child only as long as the last row that selects it,
          // and slicing the union then runs the child's slice past its end: keep the rows in use.
          const used = sparseRowsUsed(union, typeIds!);
          out.children = fields.map((_, i) => child(kids[i] && headRows(kids[i], used[i]), i, used[i]));
        }
        break;
      }
      default:
        if (!isFixedWidth(type)) throw new TrellisError('ERR_INTERNAL', `no layout for Arrow type ${String(type)}`);
        set('values', head(d.values, length * d.stride), length * d.stride * type.ArrayType.BYTES_PER_ELEMENT);
    }
    return out;
  }

  /** Index of a dictionary in the table's list, laying it out on first use. */
  private dictionary(dict: arrow.Vector | undefined, type: arrow.Dictionary, column: string): number {
    if (!dict)
      throw new TrellisError('ERR_BAD_REQUEST', `dictionary column ${JSON.stringify(column)} has no dictionary`);
    let index = this.dictionaryIndex.get(dict);
    if (index === undefined) {
      index = this.dictionaries.length;
      this.dictionaryIndex.set(dict, index);
      const entry: ArrowMeta['dictionaries'][number] = { chunks: [] };
      this.dictionaries.push(entry);
      const chunks = dict.data.length > 0 ? dict.data : [emptyData(type.dictionary)];
      entry.chunks = chunks.map((chunk) => this.node(chunk, type.dictionary, `${column} (dictionary)`));
    }
    return index;
  }
}

// ---- encode -----------------------------------------------------------------

/**
 * The Data of a batch column. A table made from 0-row vectors holds the
 * vectors themselves where Data belongs (an arrow-js quirk): unwrap those.
 */
function columnData(col: arrow.Data | arrow.Vector | undefined, type: arrow.DataType): arrow.Data | undefined {
  if (!(col instanceof arrow.Vector)) return col;
  if (col.data.length === 1) return col.data[0];
  if (col.length === 0) return emptyData(type);
  throw new TrellisError('ERR_BAD_REQUEST', `a record batch column holds a Vector of ${col.data.length} chunks`);
}

/** Lays a table out as one blob; throws ERR_UNSUPPORTED for column types the codec cannot store. */
export function encodeArrowTable(t: arrow.Table): EncodedValue {
  if (!isArrowTable(t)) throw invalidParameter('table', 'an arrow.Table', t);
  const { schema } = t;
  const fields = schema.fields.map((f) => fieldToJSON(f, f.name));
  const layout = new LayoutWriter();
  const batches = t.batches.map((b, bi): BatchJSON => {
    const length = b.numRows;
    const columns = schema.fields.map((f, i) => {
      const col = columnData(b.data.children[i], f.type);
      if (!col) throw new TrellisError('ERR_BAD_REQUEST', `record batch ${bi} has no column ${JSON.stringify(f.name)}`);
      return layout.node(headRows(col, length), f.type, f.name);
    });
    const out: BatchJSON = { length, columns };
    if (b.metadata.size > 0) out.metadata = [...b.metadata];
    return out;
  });
  const meta: ArrowMeta = {
    format: FORMAT,
    schema: schema.metadata.size > 0 ? { fields, metadata: [...schema.metadata] } : { fields },
    numRows: t.numRows,
    batches,
    dictionaries: layout.dictionaries,
  };
  return {
    typename: ARROW_TYPENAME,
    meta: meta as unknown as Record<string, unknown>,
    size: layout.size,
    write: (dst) => layout.write(dst),
  };
}

// ---- decode -----------------------------------------------------------------

type ViewCtor<T> = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
};

/** Rebuilds a table from its metadata over views of its blob, validating as it goes. */
class TableReader {
  private dictionaryJSON: unknown[] = [];
  private readonly dictionaries = new Map<number, arrow.Vector>();
  private readonly building = new Set<number>();

  constructor(private readonly blob: Uint8Array) {
    if (blob.byteOffset % 8 !== 0) throw new TrellisError('ERR_PROTOCOL', 'the blob is not 8-byte aligned');
  }

  read(input: Record<string, unknown>): arrow.Table {
    const meta = obj(input, 'meta');
    if (meta.format !== FORMAT) throw bad('format', String(FORMAT), meta.format);
    const schemaJSON = obj(meta.schema, 'schema');
    const fields = list(schemaJSON.fields, 'schema.fields').map((f, i) => fieldFromJSON(f, `schema.fields[${i}]`, 0));
    const schema = new arrow.Schema(fields, pairs(schemaJSON.metadata, 'schema.metadata'));
    this.dictionaryJSON = list(meta.dictionaries, 'dictionaries');
    const rowType = new arrow.Struct(fields);
    let rows = 0;
    const batches = list(meta.batches, 'batches').map((v, bi) => {
      const where = `batches[${bi}]`;
      const b = obj(v, where);
      const length = int(b.length, `${where}.length`);
      const columns = list(b.columns, `${where}.columns`);
      if (columns.length !== fields.length) throw bad(`${where}.columns`, `${fields.length} columns`, columns.length);
      const children = columns.map((c, i) => {
        const d = this.node(c, fields[i].type, `${where}.columns[${i}]`, 0);
        if (d.length !== length) throw bad(`${where}.columns[${i}].length`, String(length), d.length);
        return d;
      });
      rows += length;
      const data = makeData({ type: rowType, length, nullCount: 0, children }) as arrow.Data<arrow.Struct>;
      return new arrow.RecordBatch(schema, data, pairs(b.metadata, `${where}.metadata`));
    });
    if (meta.numRows !== rows) throw bad('numRows', `${rows}, the sum of the batch lengths`, meta.numRows);
    return new arrow.Table(schema, batches);
  }

  /** A view of one buffer, checked to lie inside the blob and to hold at least `need` elements. */
  private view<T>(ctor: ViewCtor<T>, ref: unknown, where: string, need: number): T | undefined {
    if (ref === undefined) {
      if (need > 0) throw bad(where, `a buffer of at least ${need} elements`);
      return undefined;
    }
    if (!Array.isArray(ref) || ref.length !== 2) throw bad(where, 'a [byteOffset, byteLength] pair', ref);
    const off = int(ref[0], `${where}[0]`);
    const len = int(ref[1], `${where}[1]`);
    if (off % BUFFER_ALIGN !== 0) throw bad(`${where}[0]`, `a multiple of ${BUFFER_ALIGN}`, off);
    if (off + len > this.blob.byteLength) throw bad(where, `a range inside the ${this.blob.byteLength}-byte blob`, ref);
    if (len % ctor.BYTES_PER_ELEMENT !== 0) throw bad(`${where}[1]`, `a multiple of ${ctor.BYTES_PER_ELEMENT}`, len);
    const n = len / ctor.BYTES_PER_ELEMENT;
    if (n < need) throw bad(where, `a buffer of at least ${need} elements`, ref);
    return new ctor(this.blob.buffer, this.blob.byteOffset + off, n);
  }

  private node(v: unknown, type: arrow.DataType, where: string, depth: number): arrow.Data {
    if (depth > MAX_DEPTH) throw bad(where, `Data nested at most ${MAX_DEPTH} deep`);
    const j = obj(v, where);
    const at = (k: string) => `${where}.${k}`;
    const length = int(j.length, at('length'));
    const offset = int(j.offset, at('offset'));
    const nullCount = int(j.nullCount, at('nullCount'), -1, length);
    const bitmapBytes = length > 0 ? (offset + length + 7) >> 3 : 0;
    const props: Record<string, unknown> = { type, length, offset, nullCount };
    if (type.typeId !== Type.Null && type.typeId !== Type.Union) {
      props.nullBitmap = this.view(Uint8Array, j.validity, at('validity'), j.validity === undefined ? 0 : bitmapBytes);
    }
    const fields = childFields(type);
    const childJSON = j.children === undefined ? [] : list(j.children, at('children'));
    if (childJSON.length !== fields.length) throw bad(at('children'), `${fields.length} child nodes`, childJSON.length);
    /** Child i, checked to hold at least `need` rows. */
    const child = (i: number, need: number) => {
      const d = this.node(childJSON[i], fields[i].type, `${where}.children[${i}]`, depth + 1);
      if (d.length < need) throw bad(`${where}.children[${i}].length`, `at least ${need}`, d.length);
      return d;
    };
    /** Value offsets of a variable-length node, and the end of the range they cover. */
    const offsets = () => {
      const ctor: ViewCtor<OffsetArray> = hasLargeOffsets(type) ? BigInt64Array : Int32Array;
      const o = this.view(ctor, j.offsets, at('offsets'), length > 0 ? length + 1 : 0);
      const end = o && length > 0 ? Number(o[length]) : 0;
      if (o && length > 0 && (Number(o[0]) < 0 || end < Number(o[0]))) throw bad(at('offsets'), 'ascending offsets');
      return { valueOffsets: o, end };
    };
    switch (type.typeId) {
      case Type.Null:
        break;
      case Type.Bool:
        props.data = this.view(Uint8Array, j.values, at('values'), bitmapBytes);
        break;
      case Type.Dictionary: {
        const dict = type as arrow.Dictionary;
        props.data = this.view(dict.indices.ArrayType as ViewCtor<unknown>, j.values, at('values'), length);
        props.dictionary = this.dictionary(j.dictionary, dict, at('dictionary'), depth);
        break;
      }
      case Type.Utf8:
      case Type.LargeUtf8:
      case Type.Binary:
      case Type.LargeBinary: {
        const { valueOffsets, end } = offsets();
        props.valueOffsets = valueOffsets;
        props.data = this.view(Uint8Array, j.values, at('values'), end);
        break;
      }
      case Type.List:
      case Type.LargeList:
      case Type.Map: {
        const { valueOffsets, end } = offsets();
        props.valueOffsets = valueOffsets;
        props.child = child(0, end);
        break;
      }
      case Type.FixedSizeList:
        props.child = child(0, length * (type as arrow.FixedSizeList).listSize);
        break;
      case Type.Struct:
        props.children = fields.map((_, i) => child(i, length));
        break;
      case Type.Union: {
        props.typeIds = this.view(Int8Array, j.typeIds, at('typeIds'), length);
        if ((type as arrow.Union).mode === arrow.UnionMode.Dense)
          props.valueOffsets = this.view(Int32Array, j.offsets, at('offsets'), length);
        // arrow-js's own union builder leaves sparse children shorter than the union, so no length is required
        props.children = fields.map((_, i) => child(i, 0));
        break;
      }
      default:
        if (!isFixedWidth(type)) throw bad(where, 'a node of a supported type');
        props.data = this.view(type.ArrayType as ViewCtor<unknown>, j.values, at('values'), length * strideOf(type));
    }
    return makeData(props);
  }

  /** The dictionary at `ref`, built once and shared by every node that names it. */
  private dictionary(ref: unknown, type: arrow.Dictionary, where: string, depth: number): arrow.Vector {
    const index = int(ref, where, 0, this.dictionaryJSON.length - 1);
    const built = this.dictionaries.get(index);
    if (built) {
      if (!arrow.util.compareTypes(built.type, type.dictionary)) {
        throw bad(where, `a dictionary of ${String(type.dictionary)}`, String(built.type));
      }
      return built;
    }
    if (this.building.has(index)) throw bad(where, 'a dictionary that does not contain itself', index);
    this.building.add(index);
    const entry = obj(this.dictionaryJSON[index], `dictionaries[${index}]`);
    const chunks = list(entry.chunks, `dictionaries[${index}].chunks`);
    if (chunks.length === 0) throw bad(`dictionaries[${index}].chunks`, 'at least one chunk', chunks);
    const data = chunks.map((c, i) => this.node(c, type.dictionary, `dictionaries[${index}].chunks[${i}]`, depth + 1));
    const vector = new arrow.Vector(data);
    this.building.delete(index);
    this.dictionaries.set(index, vector);
    return vector;
  }
}

/** Rebuilds a table over the blob's read-only view; bad metadata throws ERR_PROTOCOL. */
export function arrowTableFromRecord(rec: ObjectRecord, resolve: BlobResolver): arrow.Table {
  const blob = rec.members[0];
  if (!blob) throw new TrellisError('ERR_PROTOCOL', `Arrow table ${rec.id} has no data blob`);
  const bytes = resolve(blob);
  try {
    return new TableReader(bytes).read(rec.meta);
  } catch (e) {
    if (e instanceof TrellisError) throw new TrellisError(e.code, `Arrow table ${rec.id}: ${e.message}`, { cause: e });
    // arrow itself refused what the metadata describes
    throw new TrellisError('ERR_PROTOCOL', `Arrow table ${rec.id} cannot be rebuilt: ${(e as Error)?.message}`, {
      cause: e,
    });
  }
}
