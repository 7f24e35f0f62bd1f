/** `trellis ingest PATH --name DATASET --shards K`: files to a sharded dataset (src/ingest/), with a progress bar on a terminal. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { connect } from '../client/connect.js';
import { reported, usageExit } from './exit-codes.js';
import { progressBar } from './progress.js';
import { formatSize } from './size.js';

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got ${v}`);
  return n;
}

export function ingestCommand(): Command {
  return new Command('ingest')
    .exitOverride(usageExit)
    .description(
      'build a sharded dataset from Fashion-MNIST IDX files (gzipped or not), .npy files, an Arrow IPC file or a Parquet file',
    )
    .argument('<path>', 'the images IDX file, the features .npy, or the Arrow / Parquet table')
    .requiredOption('--name <dataset>', 'name of the new dataset')
    .option('--shards <k>', 'number of shards', positiveInt, 1)
    .option('--labels <path>', 'labels file (IDX: default found by name, images-idx3 -> labels-idx1; .npy: required)')
    .addOption(
      new Option('--format <format>', 'input format (default: from the name or the first bytes)').choices([
        'idx',
        'npy',
        'arrow',
        'parquet',
      ]),
    )
    .option(
      '--features <columns>',
      'tables: feature column(s), comma-separated (default: features, else every column but the label)',
    )
    .option('--label <column>', 'tables: the label column', 'label')
    .option('--socket <path>', "the store's UNIX socket (default: $TRELLIS_SOCKET or /tmp/trellis.sock)")
    .option('--json', 'print the dataset as JSON: { id, name, shards, rows, sampleShape, dtype, labelDtype, bytes }')
    .action(
      reported(async (path: string, o: Record<string, string | number | boolean | undefined>) => {
        const { openIngestSource } = await import('../ingest/open-source.js');
        const { ingest } = await import('../ingest/ingest.js');
        const source = await openIngestSource(path, {
          format: o.format as never,
          labels: o.labels as string | undefined,
          features: o.features === undefined ? undefined : String(o.features).split(','),
          label: o.label as string,
        });
        try {
          const client = await connect({ socket: o.socket as string | undefined, name: 'trellis ingest' });
          try {
            const per = source.sampleShape.reduce((a, b) => a * b, 1);
            const bar = await progressBar(`ingest ${o.name}`, source.rows * (per + 1));
            try {
              const r = await ingest(client, source, {
                name: String(o.name),
                shards: Number(o.shards),
                onProgress: (done, total) => bar.update(done, total),
              });
              bar.stop();
              process.stdout.write(
                o.json
                  ? `${JSON.stringify(r)}\n`
                  : `ingested ${r.name} ${r.id}: ${r.rows} rows of ${r.dtype}[${r.sampleShape.join(', ')}] + ${r.labelDtype} labels in ${r.shards.length} shards, ${formatSize(r.bytes)}\n`,
              );
            } finally {
              bar.stop();
            }
          } finally {
            await client.close();
          }
        } finally {
          await source.close();
        }
      }),
    );
}
