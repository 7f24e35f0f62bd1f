/**
 * Parquet files through hyparquet (pure JavaScript, no dependencies, reads
 * byte ranges of the file on demand): the footer gives the row count and the
 * row groups, which are then decoded one at a time and copied into shards.
 * Columns are flat numbers (booleans, integers with their converted or
 * logical width, floats); nested and byte-array columns are refused.
 */
import type { FileMetaData, SchemaElement } from 'hyparquet';
import { DTYPES, type DType, type TypedArray } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import { fileEnds } from './byte-source.js';
import type { IngestSource } from './ingest-source.js';
import { type ColumnChoice, chooseColumns, type RowBatch, TableSource } from './table-source.js';

const MAGIC = 'PAR1';

const CONVERTED: Record<string, DType> = {
  INT_8: 'int8',
  INT_16: 'int16',
  INT_32: 'int32',
  INT_64: 'int64',
  UINT_8: 'uint8',
  UINT_16: 'uint16',
  UINT_32: 'uint32',
  UINT_64: 'uint64',
};

function dtypeOfColumn(path: string, el: SchemaElement): DType {
  const refuse = (why: string) =>
    new TrellisError(
      'ERR_UNSUPPORTED',
      `${path}: column ${JSON.stringify(el.name)} ${why}; ingest takes flat boolean, integer and float columns`,
    );
  if (el.repetition_type === 'REPEATED' || (el.num_children ?? 0) > 0) throw refuse('is nested or repeated');
  const logical = el.logical_type as { type?: string; bitWidth?: number; isSigned?: boolean } | undefined;
  if (logical?.type === 'INTEGER' && logical.bitWidth)
    return `${logical.isSigned ? 'int' : 'uint'}${logical.bitWidth}` as DType;
  switch (el.type) {
    case 'BOOLEAN':
      return 'bool';
    case 'INT32':
    case 'INT64': {
      if (el.converted_type && CONVERTED[el.converted_type]) return CONVERTED[el.converted_type]!;
      if (el.converted_type || (logical?.type && logical.type !== 'INTEGER'))
        throw refuse(`is ${el.converted_type ?? logical?.type}, not a plain number`);
      return el.type === 'INT32' ? 'int32' : 'int64';
    }
    case 'FLOAT':
      return 'float32';
    case 'DOUBLE':
      return 'float64';
    default:
      throw refuse(`has Parquet type ${el.type}${el.converted_type ? ` (${el.converted_type})` : ''}`);
  }
}

/** A decoded column chunk as the dtype's TypedArray (one copy of one row group); nulls are refused. */
function toTyped(path: string, name: string, dtype: DType, data: ArrayLike<unknown>): TypedArray {
  const ctor = DTYPES[dtype] as unknown as { from(a: ArrayLike<unknown>, f?: (v: unknown) => unknown): TypedArray };
  const wide = dtype === 'int64' || dtype === 'uint64';
  for (let i = 0; i < data.length; i++) {
    if (data[i] === null || data[i] === undefined)
      throw new TrellisError(
        'ERR_UNSUPPORTED',
        `${path}: column ${JSON.stringify(name)} has a null at row ${i} of a row group; a tensor cannot hold nulls`,
      );
  }
  return wide
    ? ctor.from(data, (v) => (typeof v === 'bigint' ? v : BigInt(v as number)))
    : ctor.from(data, (v) => Number(v));
}

async function checkMagic(path: string): Promise<void> {
  const { head, tail } = await fileEnds(path, 4, 4);
  if (head.toString('latin1') !== MAGIC)
    throw new TrellisError('ERR_FILE_FORMAT', `${path} is not a Parquet file: it does not start with PAR1`);
  if (tail.toString('latin1') !== MAGIC)
    throw new TrellisError('ERR_FILE_TRUNCATED', `${path} ends before its Parquet footer`);
}

export async function openParquet(path: string, choice: ColumnChoice = {}): Promise<IngestSource> {
  await checkMagic(path);
  // Loaded here: only `trellis ingest` of a Parquet file needs it.
  const hp = await import('hyparquet');
  const file = await hp.asyncBufferFromFile(path);
  let metadata: FileMetaData;
  try {
    metadata = await hp.parquetMetadataAsync(file);
  } catch (e) {
    throw new TrellisError('ERR_FILE_FORMAT', `${path}: ${(e as Error).message}`, { cause: e });
  }
  const top = hp.parquetSchema(metadata).children.map((c) => c.element);
  const cols = chooseColumns(
    path,
    top.map((e) => e.name),
    choice,
  );
  const el = (n: string) => top.find((e) => e.name === n)!;
  const dtypes = cols.features.map((n) => dtypeOfColumn(path, el(n)));
  const dtype = dtypes[0]!;
  if (dtypes.some((d) => d !== dtype)) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${path}: feature columns ${cols.features.join(', ')} differ in type (${dtypes.join(', ')}); they must share one`,
    );
  }
  const labelDtype = dtypeOfColumn(path, el(cols.label));
  const rows = Number(metadata.num_rows);
  const wanted = [...cols.features, cols.label];
  const batches = (async function* (): AsyncGenerator<RowBatch> {
    let start = 0;
    for (const g of metadata.row_groups) {
      const n = Number(g.num_rows);
      if (n === 0) continue;
      const got = new Map<string, ArrayLike<unknown>>();
      try {
        await hp.parquetRead({
          file,
          metadata,
          columns: wanted,
          rowStart: start,
          rowEnd: start + n,
          onChunk: (c) => {
            // A chunk covers the row group; keep our rows of it.
            const lo = start - c.rowStart;
            got.set(c.columnName, (c.columnData as unknown[]).slice(lo, lo + n));
          },
        });
      } catch (e) {
        throw new TrellisError('ERR_FILE_FORMAT', `${path}: row group at row ${start}: ${(e as Error).message}`, {
          cause: e,
        });
      }
      const column = (name: string, d: DType) => {
        const data = got.get(name);
        if (!data || data.length !== n)
          throw new TrellisError(
            'ERR_FILE_TRUNCATED',
            `${path}: column ${name} has ${data?.length ?? 0} of the ${n} rows of its row group at row ${start}`,
          );
        return toTyped(path, name, d, data);
      };
      yield { rows: n, features: cols.features.map((f) => column(f, dtype)), labels: column(cols.label, labelDtype) };
      start += n;
    }
  })();
  return new TableSource(
    'parquet',
    path,
    { rows, sampleShape: cols.features.length === 1 ? [] : [cols.features.length], dtype, labelDtype },
    batches,
    async () => {
      await batches.return(undefined);
    },
  );
}
