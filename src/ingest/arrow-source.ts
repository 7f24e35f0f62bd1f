/**
 * Arrow IPC files (the file format, "ARROW1" at both ends, read with random
 * access) and streams, read one record batch at a time. The row count is not
 * in an Arrow footer, so the batches are read twice: once to count the rows
 * (each batch dropped as soon as it is counted), once to fill the shards.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import * as arrow from 'apache-arrow';
import { DTYPES, type DType } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import { arrowColumnTensor, dtypeOfArrow, recordedSampleShape } from '../loaders/arrow-adapter.js';
import { fileEnds } from './byte-source.js';
import type { IngestSource } from './ingest-source.js';
import { type ColumnChoice, chooseColumns, type RowBatch, TableSource } from './table-source.js';

const MAGIC = 'ARROW1';
const CONTINUATION = 0xffffffff;

type Kind = 'file' | 'stream';

async function kindOf(path: string): Promise<Kind> {
  const { head, tail } = await fileEnds(path, 8, 6);
  if (head.toString('latin1', 0, 6) === MAGIC) {
    if (tail.toString('latin1') !== MAGIC)
      throw new TrellisError('ERR_FILE_TRUNCATED', `${path} ends before its Arrow footer`);
    return 'file';
  }
  if (head.length >= 4 && head.readUInt32LE(0) === CONTINUATION) return 'stream';
  throw new TrellisError(
    'ERR_FILE_FORMAT',
    `${path} is not an Arrow IPC file or stream: it does not start with ARROW1 or an IPC message`,
  );
}

/** Arrow's own errors about the bytes become ERR_FILE_FORMAT; ours pass through. */
function arrowError(path: string, e: unknown): TrellisError {
  if (e instanceof TrellisError) return e;
  return new TrellisError('ERR_FILE_FORMAT', `${path}: ${(e as Error).message}`, { cause: e });
}

async function* recordBatches(path: string, kind: Kind): AsyncGenerator<arrow.RecordBatch> {
  const source = kind === 'file' ? await open(path, 'r') : createReadStream(path);
  try {
    const reader = await arrow.RecordBatchReader.from(source as never);
    for await (const batch of reader as AsyncIterable<arrow.RecordBatch>) yield batch;
  } catch (e) {
    throw arrowError(path, e);
  } finally {
    if (kind === 'file') await (source as Awaited<ReturnType<typeof open>>).close().catch(() => {});
    else (source as ReturnType<typeof createReadStream>).destroy();
  }
}

/** The tensor shape and dtype of one row of a column type: numbers, or (nested) FixedSizeLists of them. */
function rowShape(path: string, name: string, type: arrow.DataType): { shape: number[]; dtype: DType } {
  const shape: number[] = [];
  let t = type;
  while (t.typeId === arrow.Type.FixedSizeList) {
    shape.push((t as arrow.FixedSizeList).listSize);
    t = (t as arrow.FixedSizeList).children[0]!.type;
  }
  const dtype = dtypeOfArrow(t);
  if (!dtype) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${path}: column ${JSON.stringify(name)} has Arrow type ${String(type)}; ingest takes integer and float columns and FixedSizeLists of them (one of ${Object.keys(
        DTYPES,
      )
        .filter((d) => d !== 'bool')
        .join(', ')})`,
    );
  }
  return { shape, dtype };
}

export async function openArrow(path: string, choice: ColumnChoice = {}): Promise<IngestSource> {
  const kind = await kindOf(path);
  let rows = 0;
  let schema: arrow.Schema | undefined;
  for await (const b of recordBatches(path, kind)) {
    schema ??= b.schema;
    rows += b.numRows;
  }
  if (!schema) throw new TrellisError('ERR_FILE_FORMAT', `${path} holds no record batch`);
  const cols = chooseColumns(
    path,
    schema.fields.map((f) => f.name),
    choice,
  );
  const field = (n: string) => schema!.fields.find((f) => f.name === n)!;
  const shapes = cols.features.map((n) => rowShape(path, n, field(n).type));
  const label = rowShape(path, cols.label, field(cols.label).type);
  if (label.shape.length > 0)
    throw new TrellisError('ERR_FILE_FORMAT', `${path}: label column ${cols.label} must hold one number per row`);
  const dtype = shapes[0]!.dtype;
  if (shapes.some((s) => s.dtype !== dtype)) {
    throw new TrellisError(
      'ERR_UNSUPPORTED',
      `${path}: feature columns ${cols.features.join(', ')} differ in type; they must share one`,
    );
  }
  let sampleShape: number[];
  if (cols.features.length === 1) {
    sampleShape = shapes[0]!.shape;
    const recorded = recordedSampleShape(schema);
    if (recorded && recorded.reduce((a, b) => a * b, 1) === sampleShape.reduce((a, b) => a * b, 1))
      sampleShape = recorded;
  } else {
    if (shapes.some((s) => s.shape.length > 0)) {
      throw new TrellisError(
        'ERR_UNSUPPORTED',
        `${path}: with several feature columns each must hold one number per row`,
      );
    }
    sampleShape = [cols.features.length];
  }
  const it = recordBatches(path, kind);
  const batches = (async function* (): AsyncGenerator<RowBatch> {
    for await (const b of it) {
      if (b.numRows === 0) continue;
      const features = cols.features.map((n) => arrowColumnTensor(b, n).data);
      yield { rows: b.numRows, features, labels: arrowColumnTensor(b, cols.label).data };
    }
  })();
  return new TableSource('arrow', path, { rows, sampleShape, dtype, labelDtype: label.dtype }, batches, async () => {
    await batches.return(undefined);
  });
}
