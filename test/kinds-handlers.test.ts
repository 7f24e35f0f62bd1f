/** Map handlers by name: resolveHandler and listHandlers over real directories. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listHandlers, resolveHandler } from '../dist/src/jobs/kinds/index.js';
import { errCode } from './helpers/child.js';
import { tempDir } from './helpers/store.js';

let tmp: ReturnType<typeof tempDir>;
let a: string;
let b: string;

beforeAll(() => {
  tmp = tempDir('trellis-handlers-');
  a = join(tmp.dir, 'a');
  b = join(tmp.dir, 'b');
  mkdirSync(a);
  mkdirSync(b);
  writeFileSync(join(a, 'both.mjs'), 'export default () => 1;\n');
  writeFileSync(join(b, 'both.js'), 'export default () => 2;\n');
  writeFileSync(join(b, 'only-b.mjs'), 'export default () => 3;\n');
  writeFileSync(join(a, 'js-first.js'), '');
  writeFileSync(join(a, 'js-first.mjs'), '');
  writeFileSync(join(a, 'notes.txt'), '');
  writeFileSync(join(a, 'bad name.mjs'), '');
  mkdirSync(join(a, 'dir.mjs'));
  writeFileSync(join(tmp.dir, 'secret.mjs'), 'export default () => 0;\n');
});
afterAll(() => tmp?.cleanup());

describe('resolveHandler', () => {
  it('finds .mjs, prefers .js within a directory, and the first directory wins', async () => {
    expect(await resolveHandler('only-b', [a, b])).toBe(join(b, 'only-b.mjs'));
    expect(await resolveHandler('both', [a, b])).toBe(join(a, 'both.mjs'));
    expect(await resolveHandler('both', [b, a])).toBe(join(b, 'both.js'));
    expect(await resolveHandler('js-first', [a])).toBe(join(a, 'js-first.js'));
  });

  it('refuses names that are paths or not plain words', async () => {
    for (const name of ['../secret', '..', 'a/both', '/etc/passwd', 'both.mjs', '.hidden', '', 'x'.repeat(101)]) {
      expect([name, await errCode(resolveHandler(name, [a]))]).toEqual([name, 'ERR_BAD_REQUEST']);
    }
    expect(await errCode(resolveHandler(42 as unknown as string, [a]))).toBe('ERR_BAD_REQUEST');
  });

  it('answers ERR_HANDLER_NOT_FOUND for a name no directory has (a directory named like one does not count)', async () => {
    await expect(resolveHandler('nope', [a, b])).rejects.toMatchObject({
      code: 'ERR_HANDLER_NOT_FOUND',
      message: `no handler "nope" (nope.js or nope.mjs) in ${a}, ${b}`,
    });
    expect(await errCode(resolveHandler('dir', [a]))).toBe('ERR_HANDLER_NOT_FOUND');
    expect(await errCode(resolveHandler('both', [join(tmp.dir, 'missing')]))).toBe('ERR_HANDLER_NOT_FOUND');
    expect(await errCode(resolveHandler('both', []))).toBe('ERR_HANDLER_NOT_FOUND');
  });
});

describe('listHandlers', () => {
  it('lists each usable handler once, sorted, skipping missing directories', async () => {
    expect(await listHandlers([a, b, join(tmp.dir, 'missing')])).toEqual(['both', 'js-first', 'only-b']);
    expect(await listHandlers([])).toEqual([]);
  });
});
