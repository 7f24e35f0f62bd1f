/**
 * Which reader a path needs: `format` when given, else the file name
 * (.npy, .arrow/.arrows/.feather/.ipc, .parquet, *-idx*-ubyte[.gz]), else the
 * first bytes. IDX images find their labels by name (`-images-idx3-` →
 * `-labels-idx1-`) unless `labels` names them; .npy features need `labels`.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TrellisError } from '../errors.js';
import { openArrow } from './arrow-source.js';
import { fileEnds } from './byte-source.js';
import { openIdx } from './idx-source.js';
import type { IngestSource } from './ingest-source.js';
import { openNpy } from './npy-source.js';
import { openParquet } from './parquet-source.js';
import type { ColumnChoice } from './table-source.js';

export const INGEST_FORMATS = ['idx', 'npy', 'arrow', 'parquet'] as const;
export type IngestFormat = (typeof INGEST_FORMATS)[number];

export interface OpenOptions extends ColumnChoice {
  format?: IngestFormat;
  /** The labels file (IDX, .npy). */
  labels?: string;
}

async function sniff(path: string): Promise<IngestFormat | undefined> {
  const { head } = await fileEnds(path, 8);
  if (head.toString('latin1', 1, 6) === 'NUMPY' && head[0] === 0x93) return 'npy';
  if (head.toString('latin1', 0, 6) === 'ARROW1' || (head.length >= 4 && head.readUInt32LE(0) === 0xffffffff))
    return 'arrow';
  if (head.toString('latin1', 0, 4) === 'PAR1') return 'parquet';
  if ((head[0] === 0x1f && head[1] === 0x8b) || (head[0] === 0 && head[1] === 0)) return 'idx';
  return undefined;
}

export function formatOfName(path: string): IngestFormat | undefined {
  const name = basename(path).toLowerCase().replace(/\.gz$/, '');
  if (name.endsWith('.npy')) return 'npy';
  if (/\.(arrow|arrows|feather|ipc)$/.test(name)) return 'arrow';
  if (/\.(parquet|pq)$/.test(name)) return 'parquet';
  if (/idx\d-ubyte$/.test(name)) return 'idx';
  return undefined;
}

/** The labels file beside an IDX images file, by the MNIST naming. */
export function idxLabelsOf(imagesPath: string): string | undefined {
  const name = basename(imagesPath);
  const labels = name.replace('images-idx3', 'labels-idx1');
  if (labels === name) return undefined;
  const path = join(dirname(imagesPath), labels);
  // Gzipped images beside plain labels, or the other way round.
  const other = path.endsWith('.gz') ? path.slice(0, -3) : `${path}.gz`;
  return !existsSync(path) && existsSync(other) ? other : path;
}

export async function openIngestSource(path: string, opts: OpenOptions = {}): Promise<IngestSource> {
  const format = opts.format ?? formatOfName(path) ?? (await sniff(path));
  switch (format) {
    case 'idx': {
      const labels = opts.labels ?? idxLabelsOf(path);
      if (!labels) throw new TrellisError('ERR_BAD_REQUEST', `which file holds the labels of ${path}? give --labels`);
      return openIdx(path, labels);
    }
    case 'npy':
      if (!opts.labels)
        throw new TrellisError('ERR_BAD_REQUEST', `${path} holds the features; give the labels .npy with --labels`);
      return openNpy(path, opts.labels);
    case 'arrow':
      return openArrow(path, opts);
    case 'parquet':
      return openParquet(path, opts);
    default:
      throw new TrellisError(
        'ERR_FILE_FORMAT',
        `cannot tell the format of ${path} from its name or first bytes; give --format (${INGEST_FORMATS.join(', ')})`,
      );
  }
}
