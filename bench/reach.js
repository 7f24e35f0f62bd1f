/**
 * Reaching the data from files and from Python, each beside a baseline of the same run:
 *
 *   ingest of Fashion-MNIST train (gzipped IDX, as Debian ships it) into 4 shards
 *     vs. inflating the same two files as streams (1 MiB chunks, as ingest) to nowhere: what ingest cannot avoid;
 *   ingest of the same data as plain IDX files vs. reading the files into a buffer already faulted in;
 *   a Python reader summing a 256 MiB tensor over the store's memory (python/, first touch of a
 *     fresh process's mapping, then warm) vs. the same sum over a private numpy array;
 *   a Python put of 256 MiB (create, copy into the store's memory, seal) vs. numpy.copyto into a
 *     private array of the same size.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, createReadStream, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, gunzipSync } from 'node:zlib';
import { fmtRatio, fmtUs, MiB, median, nowUs, ROOT, report, startStore, tempDir, trellis } from './lib.js';

const FMNIST = '/usr/share/datasets/fashion-mnist';
const ROUNDS = 3;
const PY = '/usr/bin/python3';

async function inflate(path) {
  let n = 0;
  await pipeline(
    createReadStream(path),
    createGunzip({ chunkSize: MiB }),
    new Writable({
      write(chunk, _e, cb) {
        n += chunk.length;
        cb();
      },
    }),
  );
  return n;
}

/** Reads a whole file into `buf` with positional reads, as ingest reads a plain file. */
function readInto(path, buf) {
  const fd = openSync(path, 'r');
  try {
    let off = 0;
    for (;;) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
  } finally {
    closeSync(fd);
  }
}

const PY_READ = `
import json, sys, time, numpy as np, trellis
c = trellis.connect(sys.argv[1])
a = c.get(sys.argv[2])
t0 = time.perf_counter(); s1 = int(a.view(np.uint64).sum(dtype=np.uint64)); t1 = time.perf_counter()
s2 = int(a.view(np.uint64).sum(dtype=np.uint64)); t2 = time.perf_counter()
b = np.ones(a.nbytes, dtype=np.uint8)
t3 = time.perf_counter(); int(b.view(np.uint64).sum(dtype=np.uint64)); t4 = time.perf_counter()
x = np.ones(a.nbytes, dtype=np.uint8); y = np.empty_like(x); y[:] = 0
t5 = time.perf_counter(); i = c.put(x); t6 = time.perf_counter()
t7 = time.perf_counter(); np.copyto(y, x); t8 = time.perf_counter()
c.delete(i)
print(json.dumps({"coldUs": (t1-t0)*1e6, "warmUs": (t2-t1)*1e6, "privateUs": (t4-t3)*1e6,
                  "putUs": (t6-t5)*1e6, "copyUs": (t8-t7)*1e6, "same": s1 == s2}))
`;

async function main() {
  const { connect } = await trellis();
  const { ingest } = await import(join(ROOT, 'dist/src/ingest/ingest.js'));
  const { openIngestSource } = await import(join(ROOT, 'dist/src/ingest/open-source.js'));
  const store = await startStore({ size: '1G' });
  const client = await connect({ socket: store.socket, name: 'bench reach' });
  const { dir } = tempDir();
  const gzImages = join(FMNIST, 'train-images-idx3-ubyte.gz');
  const gzLabels = join(FMNIST, 'train-labels-idx1-ubyte.gz');
  const rawImages = join(dir, 'train-images-idx3-ubyte');
  writeFileSync(rawImages, gunzipSync(readFileSync(gzImages)));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), gunzipSync(readFileSync(gzLabels)));

  // The plain-file baseline reads into memory already faulted in, as ingest's reused arena blocks are.
  const warm = Buffer.alloc(statSync(rawImages).size, 1);
  const times = { gz: [], gzBase: [], raw: [], rawBase: [] };
  let bytes = 0;
  for (let r = 0; r < ROUNDS; r++) {
    for (const [key, path] of [
      ['gz', gzImages],
      ['raw', rawImages],
    ]) {
      const src = await openIngestSource(path);
      const t = nowUs();
      const res = await ingest(client, src, { name: `bench/${key}/${r}`, shards: 4 });
      times[key].push(nowUs() - t);
      await src.close();
      bytes = res.bytes;
      await client.delete([res.id, ...res.shards]);
      await client.dropName(`bench/${key}/${r}`).catch(() => {});
    }
    let t = nowUs();
    await inflate(gzImages);
    await inflate(gzLabels);
    times.gzBase.push(nowUs() - t);
    t = nowUs();
    readInto(rawImages, warm);
    readInto(join(dir, 'train-labels-idx1-ubyte'), warm);
    times.rawBase.push(nowUs() - t);
  }

  // A 256 MiB tensor for the Python reader, written by this process.
  const n = 256 * MiB;
  const w = await client.createTensor('uint8', [n]);
  w.data.fill(1);
  await w.seal({ name: 'bench/py' });
  const py = JSON.parse(
    execFileSync(PY, ['-c', PY_READ, store.socket, 'bench/py'], {
      env: { ...process.env, PYTHONPATH: join(ROOT, 'python') },
    }).toString(),
  );
  await client.close();
  await store.stop();

  const row = (name, us, base, baseName) => ({
    case: name,
    result: fmtUs(us),
    baseline: `${fmtUs(base)} ${baseName}`,
    ratio: fmtRatio(us / base),
  });
  report(
    'reach: ingest and Python',
    [
      row(
        `ingest gz IDX, ${(bytes / MiB).toFixed(0)} MiB, 4 shards`,
        median(times.gz),
        median(times.gzBase),
        'gunzip stream',
      ),
      row('ingest plain IDX, 4 shards', median(times.raw), median(times.rawBase), 'read into warm buffer'),
      row('python get + sum 256 MiB, cold', py.coldUs, py.privateUs, 'sum private array'),
      row('python get + sum 256 MiB, warm', py.warmUs, py.privateUs, 'sum private array'),
      row('python put 256 MiB', py.putUs, py.copyUs, 'numpy.copyto private'),
    ],
    [
      `median of ${ROUNDS} rounds for ingest; Python figures from one reader process`,
      'cold: the first touch of each page of a fresh mapping (page faults), warm: the same sum again',
    ],
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
