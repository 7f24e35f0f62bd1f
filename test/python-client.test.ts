/**
 * The Python package (python/) against a real store, run by Debian's
 * /usr/bin/python3 with python3-numpy (scripts/system-deps.sh installs it):
 * Node puts and Python reads byte-exact for every dtype, as read-only views
 * over the mmap'd segments; reading 256 MiB adds almost nothing to the
 * Python process's private memory; Python puts and Node reads; kill -9 of a
 * Python reader gives its pins back; and the PyTorch example runs when
 * python3-torch is installed.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DType, DTYPES as TENSOR_DTYPES } from '../dist/src/codecs/tensor.js';
import { connect, type Tensor, type TrellisClient } from '../dist/src/index.js';
import { eventually } from './helpers/child.js';
import { ROOT, startStore } from './helpers/store.js';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const CHECK = join(ROOT, 'test/python/check.py');
const ENV = { ...process.env, PYTHONPATH: join(ROOT, 'python') };
const HAS_TORCH = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;

/** Every dtype the tensor codec knows, in its order (the Python check script puts them in the same order). */
const DTYPES = Object.keys(TENSOR_DTYPES) as DType[];
/** numpy's name of each dtype. */
const NUMPY: Record<string, string> = { bool: 'bool' };

const sha256 = (b: ArrayBufferView) =>
  createHash('sha256')
    .update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength))
    .digest('hex');

async function python(args: string[]): Promise<Record<string, unknown>[]> {
  const { stdout } = await run(PYTHON, [CHECK, ...args], { env: ENV, maxBuffer: 1 << 20 });
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

describe('the Python package', () => {
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;

  beforeAll(async () => {
    store = await startStore({ size: 768 * 1024 * 1024 });
    client = await connect({ socket: store.socket });
  });
  afterAll(async () => {
    await client.close();
    await store.stop();
  });

  it('reads what Node put, byte-exact, for every dtype, as read-only views over the mapped segment', async () => {
    const expected = [];
    for (const dtype of DTYPES) {
      const w = await client.createTensor(dtype, [3, 5]);
      const bytes = new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength);
      for (let i = 0; i < bytes.length; i++) bytes[i] = dtype === 'bool' ? i % 2 : (i * 37 + 11) & 0xff;
      await w.seal({ name: `node/${dtype}` });
      expected.push({
        name: `node/${dtype}`,
        dtype: NUMPY[dtype] ?? dtype,
        shape: [3, 5],
        writeable: false,
        owner: 'mmap',
        sha256: sha256(bytes),
      });
    }
    // An empty tensor and a Blob too.
    await client.put({ dtype: 'float32', shape: [0, 4], data: new Float32Array(0) }, { name: 'node/empty' });
    const blob = await client.createBlob(1000);
    blob.buffer.fill(7);
    await blob.seal({ name: 'node/blob' });
    expected.push(
      {
        name: 'node/empty',
        dtype: 'float32',
        shape: [0, 4],
        writeable: false,
        owner: 'ndarray',
        sha256: sha256(new Uint8Array(0)),
      },
      {
        name: 'node/blob',
        dtype: 'uint8',
        shape: [1000],
        writeable: false,
        owner: 'mmap',
        sha256: sha256(new Uint8Array(1000).fill(7)),
      },
    );
    const got = await python(['read', store.socket, ...expected.map((e) => e.name)]);
    expect(got).toEqual([...expected, { held: 0 }]);
  });

  it("reading 256 MiB adds at most a few MiB to the Python process's private memory", async () => {
    const n = 256 * 1024 * 1024;
    const w = await client.createTensor('uint8', [n / 4096, 4096]);
    for (let i = 0; i < n; i += 4096) w.data.fill(i / 4096, i, i + 4096);
    const digest = sha256(w.data);
    await w.seal({ name: 'node/big' });
    const [r] = await python(['memory', store.socket, 'node/big']);
    expect({ ...r, privateKiB: undefined, rssKiB: undefined, anonKiB: undefined }).toEqual({
      nbytes: n,
      sha256: digest,
      isMmap: true,
      privateKiB: undefined,
      rssKiB: undefined,
      anonKiB: undefined,
    });
    // Every page was touched (it is in the process's resident set) but none became private to it.
    expect(r.rssKiB as number).toBeGreaterThanOrEqual(n / 1024);
    // (Private_* counts pages only this process maps: Node's writer still maps them here. Anonymous
    // memory, which a copy would take, is checked too, as it does not depend on who else maps the pages.)
    expect(r.privateKiB as number).toBeLessThan(4 * 1024);
    expect(r.anonKiB as number).toBeLessThan(4 * 1024);
  });

  it('puts arrays Node reads back with dtype, shape and bytes kept', async () => {
    const put = await python(['put', store.socket, 'py']);
    expect(put.at(-1)).toEqual({ held: 0 });
    const written = put.at(-2)!;
    for (const p of put.slice(0, -2)) {
      const t = (await client.get(await client.getName(p.name as string))) as Tensor;
      expect({ name: p.name, id: t.id, dtype: t.dtype, shape: t.shape, sha256: sha256(t.data) }).toEqual({
        name: p.name,
        id: p.id,
        dtype: p.dtype,
        shape: p.shape,
        sha256: p.sha256,
      });
      await client.release(t.id!);
    }
    expect(put.slice(0, -2).map((p) => p.dtype)).toEqual([...DTYPES, 'int32']);
    const big = (await client.get(await client.getName('py/big'))) as Tensor<Int32Array>;
    // The reversed rows were written in place: row 0 is 1023, 1022, ...
    expect([...big.data.subarray(0, 3)]).toEqual([1023, 1022, 1021]);
    await client.release(big.id!);
    const h = (await client.get(await client.getName('py/written'))) as Tensor<Uint16Array>;
    expect({ dtype: h.dtype, bits: [...h.data] }).toEqual({ dtype: 'float16', bits: written.bits });
    expect(written.bits).toEqual([0x3c00, 0xc000, 0x3800, 0x7bff]);
    await client.release(h.id!);
  });

  it('misuse fails with the documented codes; writing into a view is refused by numpy', async () => {
    await client.put(new Int32Array([1, 2, 3]), { name: 'node/errors' });
    const before = await client.list();
    expect(await python(['errors', store.socket, 'node/errors'])).toEqual([
      {
        missing: 'ERR_NAME_NOT_FOUND',
        badId: 'ERR_OBJECT_NOT_FOUND',
        complex: 'ERR_UNSUPPORTED',
        notHeld: 'ERR_NOT_REFERENCED',
        foreignArray: 'ERR_NOT_REFERENCED',
        write: 'ValueError: assignment destination is read-only',
        taken: 'ERR_OBJECT_EXISTS',
        takenBig: 'ERR_OBJECT_EXISTS',
      },
      { afterClose: 'ERR_CLOSED' },
    ]);
    // The refused puts left nothing behind (the large one's blob was aborted), and no pin is held.
    expect(await client.list()).toEqual(before);
  });

  it('kill -9 of a Python reader gives its pins back', async () => {
    const id = await client.put(new Float64Array([1, 2, 3]), { name: 'node/held' });
    const refs = async () => (await client.list()).find((s) => s.id === id)?.references;
    expect(await refs()).toBe(0);
    const child: ChildProcess = spawn(PYTHON, [CHECK, 'hold', store.socket, 'node/held'], { env: ENV });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    await eventually(() => out.includes('holding'), 'the reader holds the object');
    expect(JSON.parse(out)).toEqual({ holding: 'node/held', shape: [3] });
    expect(await refs()).toBe(1);
    child.kill('SIGKILL');
    expect(await exited).toEqual({ code: null, signal: 'SIGKILL' });
    await eventually(async () => (await refs()) === 0, 'the pin is dropped');
    expect(await refs()).toBe(0);
  });

  it.skipIf(!HAS_TORCH)('the PyTorch example wraps the view with torch.from_numpy, no copy', async () => {
    const data = new Float32Array(1000).map((_, i) => i / 4);
    await client.put({ dtype: 'float32', shape: [10, 100], data }, { name: 'node/torch' });
    const { stdout } = await run(
      PYTHON,
      [join(ROOT, 'python/examples/torch_from_numpy.py'), store.socket, 'node/torch'],
      {
        env: ENV,
      },
    );
    expect(JSON.parse(stdout)).toEqual({
      shape: [10, 100],
      dtype: 'torch.float32',
      sum: data.reduce((a, b) => a + b, 0),
      sharesMemory: true,
    });
  });
  if (!HAS_TORCH) {
    it('the PyTorch example: SKIPPED, /usr/bin/python3 has no torch (install python3-torch: scripts/system-deps.sh)', () => {
      expect(HAS_TORCH).toBe(false);
    });
  }
});
