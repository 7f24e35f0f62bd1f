/**
 * `trellis put`, `get`, `ls` and `rm` as people and scripts run them: child
 * processes against a real store. A .npy written by numpy goes in as a
 * Tensor and comes out as the same file; any other file as a Blob of its
 * bytes; listings as tables and as JSON; failures with their documented exit
 * codes (docs/OPERATIONS.md).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Tensor, type TrellisClient } from '../dist/src/index.js';
import { trellis } from './helpers/cli.js';
import { startStore, tempDir } from './helpers/store.js';

describe('trellis put / get / ls / rm', () => {
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let dir: string;
  let cleanup: () => void;
  let env: Record<string, string>;

  beforeAll(async () => {
    store = await startStore();
    client = await connect({ socket: store.socket });
    ({ dir, cleanup } = tempDir());
    env = { TRELLIS_SOCKET: store.socket };
    // numpy writes the .npy files, so the reader is checked against another implementation.
    execFileSync('/usr/bin/python3', [
      '-c',
      `import numpy as np, sys
np.save(sys.argv[1], np.arange(12, dtype='<f4').reshape(3, 4) / 4)
np.save(sys.argv[2], np.arange(6, dtype='>i4').reshape(2, 3) - 3)
np.save(sys.argv[3], np.array([True, False, True]))`,
      join(dir, 'x.npy'),
      join(dir, 'be.npy'),
      join(dir, 'b.npy'),
    ]);
  });
  afterAll(async () => {
    await client.close();
    await store.stop();
    cleanup();
  });

  it('put a .npy as a Tensor and a file as a Blob; get them back byte for byte; ls; rm', async () => {
    const x = await trellis(['put', join(dir, 'x.npy'), '--name', 'arr/x', '--json'], env);
    expect(x.code).toBe(0);
    const xr = JSON.parse(x.stdout);
    expect(xr).toEqual({ id: expect.stringMatching(/^o[0-9a-f]{16}$/), name: 'arr/x', typename: 'Tensor', nbytes: 48 });
    const t = (await client.get(xr.id)) as Tensor<Float32Array>;
    expect({ dtype: t.dtype, shape: t.shape, data: [...t.data] }).toEqual({
      dtype: 'float32',
      shape: [3, 4],
      data: Array.from({ length: 12 }, (_, i) => i / 4),
    });
    await client.release(xr.id);

    // Big-endian elements are turned little-endian, the store's order.
    const be = await trellis(['put', join(dir, 'be.npy'), '--name', 'arr/be'], env);
    expect(be).toEqual({ code: 0, stdout: expect.stringMatching(/^o[0-9a-f]{16}\n$/), stderr: '' });
    const bt = (await client.get(be.stdout.trim())) as Tensor<Int32Array>;
    expect({ dtype: bt.dtype, shape: bt.shape, data: [...bt.data] }).toEqual({
      dtype: 'int32',
      shape: [2, 3],
      data: [-3, -2, -1, 0, 1, 2],
    });
    await client.release(bt.id!);
    expect((await trellis(['put', join(dir, 'b.npy'), '--name', 'arr/b'], env)).code).toBe(0);

    const bytes = randomBytes(5 * 1024 * 1024 + 3);
    writeFileSync(join(dir, 'blob.bin'), bytes);
    const blob = await trellis(['put', join(dir, 'blob.bin'), '--name', 'files/blob', '--json'], env);
    const br = JSON.parse(blob.stdout);
    expect([blob.code, blob.stderr, br]).toEqual([
      0,
      '',
      { id: expect.stringMatching(/^o[0-9a-f]{16}$/), name: 'files/blob', typename: 'Blob', nbytes: bytes.length },
    ]);

    // get: the Tensor as a .npy numpy would write, the Blob as it was.
    expect(await trellis(['get', 'arr/x', '--out', join(dir, 'x-out.npy')], env)).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    expect(readFileSync(join(dir, 'x-out.npy'))).toEqual(readFileSync(join(dir, 'x.npy')));
    expect(await trellis(['get', 'arr/b', '--out', join(dir, 'b-out.npy')], env)).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    expect(readFileSync(join(dir, 'b-out.npy'))).toEqual(readFileSync(join(dir, 'b.npy')));
    const raw = await trellis(['get', xr.id, '--raw'], env);
    expect(Buffer.from(raw.stdout, 'latin1').length).toBe(48);
    expect(await trellis(['get', 'files/blob', '--out', join(dir, 'blob-out.bin')], env)).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    expect(readFileSync(join(dir, 'blob-out.bin')).equals(bytes)).toBe(true);
    // A gzipped file is a Blob of its own bytes, not inflated.
    writeFileSync(join(dir, 'x.gz'), gzipSync(bytes.subarray(0, 1000)));
    const gz = await trellis(['put', join(dir, 'x.gz'), '--json'], env);
    expect(JSON.parse(gz.stdout)).toEqual({
      id: expect.any(String),
      typename: 'Blob',
      nbytes: statSync(join(dir, 'x.gz')).size,
    });
    expect(await trellis(['get', JSON.parse(gz.stdout).id, '--out', join(dir, 'x-out.gz')], env)).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    expect(readFileSync(join(dir, 'x-out.gz'))).toEqual(readFileSync(join(dir, 'x.gz')));
    await trellis(['rm', JSON.parse(gz.stdout).id], env);
    // Nothing stays pinned by the commands.
    expect((await client.list()).map((s) => s.references)).toEqual([0, 0, 0, 0, 0, 0, 0]);

    const ls = await trellis(['ls', '--json'], env);
    expect([ls.code, JSON.parse(ls.stdout)]).toEqual([
      0,
      [
        { name: 'arr/b', id: expect.any(String), typename: 'Tensor', nbytes: 3 },
        { name: 'arr/be', id: be.stdout.trim(), typename: 'Tensor', nbytes: 24 },
        { name: 'arr/x', id: xr.id, typename: 'Tensor', nbytes: 48 },
        { name: 'files/blob', id: br.id, typename: 'Blob', nbytes: bytes.length },
      ],
    ]);
    const human = await trellis(['ls', '--prefix', 'arr/'], env);
    const bId = JSON.parse(ls.stdout)[0].id;
    expect(human).toEqual({
      code: 0,
      stdout: [
        'NAME    ID                 TYPE    SIZE',
        `arr/b   ${bId}  Tensor  3`,
        `arr/be  ${be.stdout.trim()}  Tensor  24`,
        `arr/x   ${xr.id}  Tensor  48`,
        '',
      ].join('\n'),
      stderr: '',
    });
    const objects = await trellis(['ls', '--objects', '--json'], env);
    expect(JSON.parse(objects.stdout).map((o: { typename: string; nbytes: number }) => [o.typename, o.nbytes])).toEqual(
      [
        ['Blob', 48],
        ['Tensor', 48],
        ['Blob', 24],
        ['Tensor', 24],
        ['Blob', 3],
        ['Tensor', 3],
        ['Blob', bytes.length],
      ],
    );

    const rm = await trellis(['rm', 'arr/x', 'arr/be', 'arr/b', br.id, '--json'], env);
    expect([rm.code, JSON.parse(rm.stdout)]).toEqual([
      0,
      [
        { name: 'arr/x', id: xr.id, shards: 0 },
        { name: 'arr/be', id: be.stdout.trim(), shards: 0 },
        { name: 'arr/b', id: bId, shards: 0 },
        { id: br.id, shards: 0 },
      ],
    ]);
    expect(await trellis(['ls'], env)).toEqual({ code: 0, stdout: 'no names\n', stderr: '' });
    expect(await trellis(['ls', '--objects', '--json'], env)).toEqual({ code: 0, stdout: '[]\n', stderr: '' });
    expect(await client.list()).toEqual([]);
  });

  it('failures print trellis: CODE: message and exit with the documented codes', async () => {
    const missing = await trellis(['get', 'no/such'], env);
    expect(missing).toEqual({
      code: 3,
      stdout: '',
      stderr: 'trellis: ERR_NAME_NOT_FOUND: no object is named "no/such"\n',
    });
    expect((await trellis(['put', join(dir, 'x.npy'), '--name', 'taken'], env)).code).toBe(0);
    const taken = await trellis(['put', join(dir, 'x.npy'), '--name', 'taken'], env);
    expect([taken.code, taken.stdout, taken.stderr]).toEqual([
      7,
      '',
      expect.stringMatching(/^trellis: ERR_OBJECT_EXISTS: /),
    ]);
    const nofile = await trellis(['put', join(dir, 'nope.bin')], env);
    expect(nofile).toEqual({
      code: 6,
      stdout: '',
      stderr: `trellis: ERR_FILE_UNREADABLE: cannot read ${join(dir, 'nope.bin')}: ENOENT\n`,
    });
    writeFileSync(join(dir, 'bad.npy'), 'this is not a numpy file');
    const bad = await trellis(['put', join(dir, 'bad.npy')], env);
    expect(bad).toEqual({
      code: 6,
      stdout: '',
      stderr: `trellis: ERR_FILE_FORMAT: ${join(dir, 'bad.npy')} is not a .npy file: it does not start with \\x93NUMPY\n`,
    });
    expect(await trellis(['ls', '--bogus'], env)).toEqual({
      code: 2,
      stdout: '',
      stderr: "error: unknown option '--bogus'\n",
    });
    const away = await trellis(['ls'], { TRELLIS_SOCKET: join(dir, 'no.sock') });
    expect(away).toEqual({
      code: 5,
      stdout: '',
      stderr: `trellis: ERR_DISCONNECTED: cannot connect to the store at ${join(dir, 'no.sock')}: ENOENT\n`,
    });
    // The refused put left only the first "taken".
    expect((await client.list()).map((s) => s.typename)).toEqual(['Blob', 'Tensor']);
    await trellis(['rm', 'taken'], env);
    expect(await client.list()).toEqual([]);
  });

  describe('trellis --help', () => {
    it('shows sizes as 1G and modes as 0600, not as bytes and decimal', async () => {
      const demo = await trellis(['demo', '--help']);
      expect(demo.stdout).toMatch(/--size <size> +store memory \(default: 1G\)\n/);
      const store = await trellis(['store', '--help']);
      expect(store.stdout.replace(/\s+/g, ' ')).toMatch(
        /--socket-mode <mode> file mode of the socket: 0600 \(owner\) or 0660 \(with --socket-group\) \(default: 0600\)/,
      );
      expect(`${demo.stdout}${store.stdout}`).not.toMatch(/1073741824|\b384\b/);
    });
  });
});
