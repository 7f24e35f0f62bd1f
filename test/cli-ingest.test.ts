/**
 * `trellis ingest` as people run it, against a real store: each format
 * (Fashion-MNIST IDX gzipped or not, .npy written by numpy, Arrow IPC file
 * and stream, Parquet) becomes a sharded dataset whose shards hold exactly
 * the source's bytes; bad files (truncated, wrong magic, wrong dtype,
 * images and labels that disagree) fail with their code and leave nothing
 * in the store, even when they fail after shards were sealed; a progress
 * bar shows on a terminal and nothing on a pipe.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as arrow from 'apache-arrow';
import { parquetWriteFile } from 'hyparquet-writer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, type StoredObject, type Tensor, type TrellisClient } from '../dist/src/index.js';
import { type CliResult, trellis } from './helpers/cli.js';
import { CLI, startStore, tempDir } from './helpers/store.js';

const exec = promisify(execFile);
const FMNIST = '/usr/share/datasets/fashion-mnist';

/** An IDX file: 00 00 type rank, big-endian dims, then `body`. */
function idx(type: number, dims: number[], body: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = type;
  head[3] = dims.length;
  dims.forEach((d, i) => {
    head.writeUInt32BE(d, 4 + 4 * i);
  });
  return Buffer.concat([head, body]);
}

function seq(n: number, f: (i: number) => number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => f(i));
}

describe('trellis ingest', () => {
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let dir: string;
  let cleanup: () => void;
  let env: Record<string, string>;
  const at = (f: string) => join(dir, f);

  beforeAll(async () => {
    store = await startStore({ size: 512 * 1024 * 1024 });
    client = await connect({ socket: store.socket });
    ({ dir, cleanup } = tempDir());
    env = { TRELLIS_SOCKET: store.socket };
  });
  afterEach(async () => {
    // Every test leaves the store as it found it.
    for (const name of Object.keys(await client.listNames())) await trellis(['rm', name], env);
    expect(await client.list()).toEqual([]);
  });
  afterAll(async () => {
    await client.close();
    await store.stop();
    cleanup();
  });

  /** The dataset's shards joined: features and labels bytes, shapes, dtypes, shard row counts. */
  async function readBack(name: string) {
    const loc = await client.locate(name);
    const xs: Buffer[] = [];
    const ys: Buffer[] = [];
    const rows: number[] = [];
    let x!: Tensor;
    let y!: Tensor;
    for (const s of loc.shards) {
      const shard = (await client.get(s.id)) as StoredObject;
      [x, y] = shard.members as Tensor[];
      xs.push(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength));
      ys.push(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
      rows.push(x.shape[0]!);
      xs[xs.length - 1] = Buffer.from(xs.at(-1)!); // copied before release
      ys[ys.length - 1] = Buffer.from(ys.at(-1)!);
      await client.release(s.id);
    }
    return {
      rows,
      sampleShape: x.shape.slice(1),
      dtype: x.dtype,
      labelDtype: y.dtype,
      x: Buffer.concat(xs),
      y: Buffer.concat(ys),
    };
  }

  async function ingest(args: string[]): Promise<Record<string, unknown>> {
    const r = await trellis(['ingest', ...args, '--json'], env);
    expect([r.code, r.stderr]).toEqual([0, '']);
    return JSON.parse(r.stdout);
  }

  it('IDX, plain and gzipped, uint8 and big-endian int16, labels found by name or given', async () => {
    const images = seq(50 * 12, (i) => (i * 7) % 256);
    const labels = seq(50, (i) => i % 10);
    writeFileSync(at('a-images-idx3-ubyte'), idx(0x08, [50, 4, 3], images));
    writeFileSync(at('a-labels-idx1-ubyte'), idx(0x08, [50], labels));
    const r = await ingest([at('a-images-idx3-ubyte'), '--name', 'idx/a', '--shards', '3']);
    expect(r).toEqual({
      id: expect.stringMatching(/^o[0-9a-f]{16}$/),
      name: 'idx/a',
      shards: [expect.any(String), expect.any(String), expect.any(String)],
      rows: 50,
      sampleShape: [4, 3],
      dtype: 'uint8',
      labelDtype: 'uint8',
      bytes: 650,
    });
    expect(await readBack('idx/a')).toEqual({
      rows: [17, 17, 16],
      sampleShape: [4, 3],
      dtype: 'uint8',
      labelDtype: 'uint8',
      x: Buffer.from(images),
      y: Buffer.from(labels),
    });

    const values = Int16Array.from({ length: 20 * 5 }, (_, i) => i * 300 - 15000);
    const be = Buffer.alloc(values.length * 2);
    values.forEach((v, i) => {
      be.writeInt16BE(v, 2 * i);
    });
    writeFileSync(at('w.idx.gz'), gzipSync(idx(0x0b, [20, 5], be)));
    writeFileSync(
      at('w-labels.gz'),
      gzipSync(
        idx(
          0x08,
          [20],
          seq(20, (i) => i),
        ),
      ),
    );
    await ingest([
      at('w.idx.gz'),
      '--format',
      'idx',
      '--labels',
      at('w-labels.gz'),
      '--name',
      'idx/w',
      '--shards',
      '2',
    ]);
    const w = await readBack('idx/w');
    expect({ ...w, x: [...new Int16Array(w.x.buffer, w.x.byteOffset, 100)] }).toEqual({
      rows: [10, 10],
      sampleShape: [5],
      dtype: 'int16',
      labelDtype: 'uint8',
      x: [...values],
      y: Buffer.from(seq(20, (i) => i)),
    });
  });

  it('the Fashion-MNIST test split from the Debian package, byte for byte', async () => {
    const r = await ingest([join(FMNIST, 't10k-images-idx3-ubyte.gz'), '--name', 'fmnist/test', '--shards', '4']);
    expect([r.rows, r.sampleShape, (r.shards as string[]).length]).toEqual([10000, [28, 28], 4]);
    const back = await readBack('fmnist/test');
    expect(back.rows).toEqual([2500, 2500, 2500, 2500]);
    expect(back.x.equals(gunzipSync(readFileSync(join(FMNIST, 't10k-images-idx3-ubyte.gz'))).subarray(16))).toBe(true);
    expect(back.y.equals(gunzipSync(readFileSync(join(FMNIST, 't10k-labels-idx1-ubyte.gz'))).subarray(8))).toBe(true);
  });

  it('.npy features and labels written by numpy, little- and big-endian', async () => {
    execFileSync('/usr/bin/python3', [
      '-c',
      `import numpy as np, sys
d = sys.argv[1]
np.save(d + '/x.npy', (np.arange(240, dtype='<f4') / 8).reshape(40, 2, 3))
np.save(d + '/y.npy', np.arange(40, dtype='<i8') % 7)
np.save(d + '/xb.npy', (np.arange(80, dtype='>f8') - 40).reshape(40, 2))`,
      dir,
    ]);
    await ingest([at('x.npy'), '--labels', at('y.npy'), '--name', 'npy/x', '--shards', '3']);
    const x = await readBack('npy/x');
    expect({
      ...x,
      x: [...new Float32Array(x.x.buffer, x.x.byteOffset, 240)],
      y: [...new BigInt64Array(x.y.buffer, x.y.byteOffset, 40)],
    }).toEqual({
      rows: [14, 14, 12],
      sampleShape: [2, 3],
      dtype: 'float32',
      labelDtype: 'int64',
      x: Array.from({ length: 240 }, (_, i) => i / 8),
      y: Array.from({ length: 40 }, (_, i) => BigInt(i % 7)),
    });
    // The file's data section is what the shards hold.
    expect(x.x.equals(readFileSync(at('x.npy')).subarray(128))).toBe(true);
    await ingest([at('xb.npy'), '--labels', at('y.npy'), '--name', 'npy/xb']);
    const xb = await readBack('npy/xb');
    expect([xb.dtype, xb.rows, [...new Float64Array(xb.x.buffer, xb.x.byteOffset, 80)]]).toEqual([
      'float64',
      [40],
      Array.from({ length: 80 }, (_, i) => i - 40),
    ]);
  });

  it('Arrow IPC: a file of several record batches with a list column, and a stream of number columns', async () => {
    const features = Float32Array.from({ length: 50 * 4 }, (_, i) => i * 0.5);
    const labels = Int32Array.from({ length: 50 }, (_, i) => i * 3);
    const batch = (lo: number, hi: number) => {
      const child = arrow.makeData({
        type: new arrow.Float32(),
        length: (hi - lo) * 4,
        nullCount: 0,
        data: features.subarray(lo * 4, hi * 4),
      });
      const list = new arrow.FixedSizeList(4, new arrow.Field('value', new arrow.Float32(), false));
      return {
        features: arrow.makeVector(arrow.makeData({ type: list, length: hi - lo, nullCount: 0, child })),
        label: arrow.makeVector(labels.subarray(lo, hi)),
      };
    };
    const parts = [batch(0, 7), batch(7, 20), batch(20, 50)].map((b) => new arrow.Table(b));
    let table = parts[0]!.concat(...parts.slice(1));
    table = new arrow.Table(
      new arrow.Schema(table.schema.fields, new Map([['trellis.sampleShape', '[2, 2]']])),
      table.batches,
    );
    expect(table.batches.length).toBe(3);
    writeFileSync(at('t.arrow'), arrow.tableToIPC(table, 'file'));
    await ingest([at('t.arrow'), '--name', 'arrow/t', '--shards', '4']);
    const t = await readBack('arrow/t');
    expect({ ...t, x: t.x.equals(Buffer.from(features.buffer)), y: t.y.equals(Buffer.from(labels.buffer)) }).toEqual({
      rows: [13, 13, 13, 11],
      sampleShape: [2, 2],
      dtype: 'float32',
      labelDtype: 'int32',
      x: true,
      y: true,
    });

    const cols = arrow.tableFromArrays({
      f0: Float64Array.from({ length: 30 }, (_, i) => i),
      f1: Float64Array.from({ length: 30 }, (_, i) => -i),
      label: Uint8Array.from({ length: 30 }, (_, i) => i % 2),
    });
    writeFileSync(at('s.arrows'), arrow.tableToIPC(cols, 'stream'));
    await ingest([at('s.arrows'), '--name', 'arrow/s', '--shards', '2']);
    const s = await readBack('arrow/s');
    expect({ ...s, x: [...new Float64Array(s.x.buffer, s.x.byteOffset, 60)] }).toEqual({
      rows: [15, 15],
      sampleShape: [2],
      dtype: 'float64',
      labelDtype: 'uint8',
      x: Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? i / 2 : -(i - 1) / 2)),
      y: Buffer.from(Uint8Array.from({ length: 30 }, (_, i) => i % 2)),
    });
  });

  it('Parquet (hyparquet): number columns side by side across row groups', async () => {
    const a = Float32Array.from({ length: 40 }, (_, i) => i / 2);
    const b = Float32Array.from({ length: 40 }, (_, i) => 100 + i);
    const label = Int32Array.from({ length: 40 }, (_, i) => i % 5);
    parquetWriteFile({
      filename: at('p.parquet'),
      columnData: [
        { name: 'a', data: a, type: 'FLOAT' },
        { name: 'b', data: b, type: 'FLOAT' },
        { name: 'label', data: label, type: 'INT32' },
      ],
      rowGroupSize: 16,
    });
    await ingest([at('p.parquet'), '--name', 'pq/p', '--shards', '3']);
    const p = await readBack('pq/p');
    expect({ ...p, x: [...new Float32Array(p.x.buffer, p.x.byteOffset, 80)] }).toEqual({
      rows: [14, 14, 12],
      sampleShape: [2],
      dtype: 'float32',
      labelDtype: 'int32',
      x: Array.from({ length: 80 }, (_, i) => (i % 2 === 0 ? a[i / 2] : b[(i - 1) / 2])),
      y: Buffer.from(label.buffer),
    });
    await ingest([at('p.parquet'), '--name', 'pq/b', '--features', 'b']);
    const only = await readBack('pq/b');
    expect([only.sampleShape, only.x.equals(Buffer.from(b.buffer))]).toEqual([[], true]);
  });

  it('bad files fail with their code and leave nothing in the store, even after shards were sealed', async () => {
    const images = seq(50 * 12, (i) => i % 256);
    const labels = seq(50, (i) => i % 10);
    const good = idx(0x08, [50, 4, 3], images);
    writeFileSync(at('ok-labels-idx1-ubyte'), idx(0x08, [50], labels));
    // Random pixels do not compress: a gzip cut at 70% ends inside the third of four shards.
    const big = randomBytes(4000 * 784);
    writeFileSync(
      at('big-labels-idx1-ubyte'),
      idx(
        0x08,
        [4000],
        seq(4000, (i) => i % 10),
      ),
    );
    const gz = gzipSync(idx(0x08, [4000, 28, 28], big));
    const cases: [string, Buffer | string, string[], number, string][] = [
      [
        'cut-images-idx3-ubyte',
        good.subarray(0, good.length - 10),
        ['--labels', at('ok-labels-idx1-ubyte')],
        6,
        'ERR_FILE_TRUNCATED: <file> has 606 bytes, its header announces 616',
      ],
      [
        'big-images-idx3-ubyte.gz',
        gz.subarray(0, Math.floor(gz.length * 0.7)),
        ['--shards', '4'],
        6,
        'ERR_FILE_TRUNCATED: <file> ends before the end of its gzip stream',
      ],
      [
        'magic-images-idx3-ubyte',
        'hello, world: not an IDX file',
        ['--labels', at('ok-labels-idx1-ubyte')],
        6,
        'ERR_FILE_FORMAT: <file> is not an IDX file: magic 68 65 6c 6c, want 00 00 TYPE RANK',
      ],
      [
        'type-images-idx3-ubyte',
        idx(0x07, [50, 4, 3], images),
        ['--labels', at('ok-labels-idx1-ubyte')],
        6,
        'ERR_UNSUPPORTED: <file>: IDX element type 0x07 is not one of 0x08 (uint8), 0x09 (int8), 0x0b (int16), 0x0c (int32), 0x0d (float32), 0x0e (float64)',
      ],
      [
        'count-images-idx3-ubyte',
        idx(0x08, [49, 4, 3], images.subarray(0, 49 * 12)),
        ['--labels', at('ok-labels-idx1-ubyte')],
        6,
        `ERR_SIZE_MISMATCH: <file> holds 49 images but ${at('ok-labels-idx1-ubyte')} 50 labels`,
      ],
    ];
    for (const [file, content, extra, code, message] of cases) {
      writeFileSync(at(file), content);
      const r = await trellis(['ingest', at(file), '--name', `bad/${file}`, ...extra], env);
      expect({ file, ...r }).toEqual({
        file,
        code,
        stdout: '',
        stderr: `trellis: ${message.replace('<file>', at(file))}\n`,
      });
      expect(await client.list()).toEqual([]);
      expect(await client.listNames()).toEqual({});
    }
  });

  it('bad .npy, Arrow and Parquet files: dtype, truncation, nulls met mid-way', async () => {
    execFileSync('/usr/bin/python3', [
      '-c',
      `import numpy as np, sys
d = sys.argv[1]
np.save(d + '/c.npy', np.zeros((10, 2), dtype='<c8'))
np.save(d + '/y.npy', np.arange(10, dtype='<i8'))
np.save(d + '/f.npy', np.zeros((10, 2), dtype='<f4'))`,
      dir,
    ]);
    const f = readFileSync(at('f.npy'));
    writeFileSync(at('cut.npy'), f.subarray(0, f.length - 4));
    const withNulls = arrow.tableFromArrays({
      x: Float32Array.from([1, 2, 3, 4]),
      label: Int32Array.from([1, 2, 3, 4]),
    });
    const nullBatch = new arrow.Table({
      x: arrow.makeVector(Float32Array.from([5, 6])),
      label: arrow.vectorFromArray([7, null], new arrow.Int32()),
    });
    writeFileSync(at('nulls.arrow'), arrow.tableToIPC(withNulls.concat(nullBatch), 'file'));
    const whole = arrow.tableToIPC(withNulls, 'file');
    writeFileSync(at('cut.arrow'), whole.subarray(0, whole.length - 20));
    writeFileSync(
      at('str.arrow'),
      arrow.tableToIPC(arrow.tableFromArrays({ x: Float32Array.from([1]), label: ['cat'] }), 'file'),
    );
    parquetWriteFile({
      filename: at('str.parquet'),
      columnData: [
        { name: 'x', data: Float32Array.from([1, 2]), type: 'FLOAT' },
        { name: 'label', data: ['a', 'b'], type: 'STRING' },
      ],
    });
    const pq = readFileSync(at('str.parquet'));
    writeFileSync(at('cut.parquet'), pq.subarray(0, pq.length - 6));
    const y = ['--labels', at('y.npy')];
    const cases: [string, string[], string][] = [
      [
        'c.npy',
        y,
        'ERR_UNSUPPORTED: <file>: numpy dtype <c8 has no Trellis dtype (one of bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64)',
      ],
      [
        'cut.npy',
        y,
        'ERR_FILE_TRUNCATED: <file> holds 76 bytes of data, its header announces 80 (<f4 of shape (10, 2))',
      ],
      [
        'nulls.arrow',
        ['--shards', '3'],
        'ERR_UNSUPPORTED: column "label" has 1 null rows; a tensor cannot hold nulls (pass allowNulls and read arrowValidity)',
      ],
      ['cut.arrow', [], 'ERR_FILE_TRUNCATED: <file> ends before its Arrow footer'],
      [
        'str.arrow',
        [],
        'ERR_UNSUPPORTED: <file>: column "label" has Arrow type Dictionary<Int32, Utf8>; ingest takes integer and float columns and FixedSizeLists of them (one of int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64)',
      ],
      [
        'str.parquet',
        [],
        'ERR_UNSUPPORTED: <file>: column "label" has Parquet type BYTE_ARRAY (UTF8); ingest takes flat boolean, integer and float columns',
      ],
      ['cut.parquet', [], 'ERR_FILE_TRUNCATED: <file> ends before its Parquet footer'],
    ];
    for (const [file, extra, message] of cases) {
      const r = await trellis(['ingest', at(file), '--name', `bad/${file}`, ...extra], env);
      expect({ file, ...r }).toEqual({
        file,
        code: 6,
        stdout: '',
        stderr: `trellis: ${message.replace('<file>', at(file))}\n`,
      });
      expect(await client.list()).toEqual([]);
      expect(await client.listNames()).toEqual({});
    }
  });

  it('a taken name is refused before anything is read (exit 7); the dataset there is untouched', async () => {
    writeFileSync(
      at('a-images-idx3-ubyte'),
      idx(
        0x08,
        [5, 2],
        seq(10, (i) => i),
      ),
    );
    writeFileSync(
      at('a-labels-idx1-ubyte'),
      idx(
        0x08,
        [5],
        seq(5, (i) => i),
      ),
    );
    const first = await ingest([at('a-images-idx3-ubyte'), '--name', 'taken']);
    const again = await trellis(['ingest', at('a-images-idx3-ubyte'), '--name', 'taken'], env);
    expect(again).toEqual({
      code: 7,
      stdout: '',
      stderr: `trellis: ERR_OBJECT_EXISTS: the name taken is bound already (to ${first.id})\n`,
    });
    expect((await client.list()).map((s) => s.typename)).toEqual(['Blob', 'Blob', 'Tensor', 'Tensor', 'Shard']);
  });

  it('shows a progress bar on a terminal and nothing on a pipe', async () => {
    const images = join(FMNIST, 't10k-images-idx3-ubyte.gz');
    const piped: CliResult = await trellis(['ingest', images, '--name', 'pipe/test'], env);
    expect([piped.code, piped.stderr]).toEqual([0, '']);
    expect(piped.stdout).toMatch(
      /^ingested pipe\/test o[0-9a-f]{16}: 10000 rows of uint8\[28, 28\] \+ uint8 labels in 1 shards, 7\.5M\n$/,
    );
    // script(1) gives the command a pseudo-terminal.
    // Asynchronously: the store runs in this process and must answer meanwhile.
    const r = await exec(
      'script',
      ['-qec', `${process.execPath} ${CLI} ingest ${images} --name tty/test`, '/dev/null'],
      { env: { ...process.env, ...env } },
    );
    const tty = r.stdout;
    expect([r.stderr, tty.slice(-120)]).toEqual(['', expect.stringContaining('ingested tty/test')]);
    expect(tty).toMatch(/ingest tty\/test \[[=-]+\] 100% 7\.5M\/7\.5M/);
    expect(tty).toMatch(/ingested tty\/test o[0-9a-f]{16}: 10000 rows/);
  });

  describe('trellis ingest into a store too small for it', () => {
    it('fails with ERR_OUT_OF_MEMORY (exit 8) after some shards, and leaves nothing behind', async () => {
      const small = await startStore({ size: 4 * 1024 * 1024 });
      const c = await connect({ socket: small.socket });
      try {
        const r = await trellis(
          ['ingest', join(FMNIST, 't10k-images-idx3-ubyte.gz'), '--name', 'too/big', '--shards', '4'],
          { TRELLIS_SOCKET: small.socket },
        );
        expect([r.code, r.stdout, r.stderr]).toEqual([8, '', expect.stringMatching(/^trellis: ERR_OUT_OF_MEMORY: /)]);
        expect(await c.list()).toEqual([]);
        expect(await c.listNames()).toEqual({});
      } finally {
        await c.close();
        await small.stop();
      }
    });
  });
});
