/**
 * The suite tests one copy of the code: the built package in dist/, loaded by
 * Node itself (not re-transformed by vitest), the same modules that worker
 * threads, gather processes and child stores run.
 */
import { join } from 'node:path';
import { connect, TrellisError } from 'trellis';
import { describe, expect, it } from 'vitest';
import { TrellisError as InternalTrellisError } from '../dist/src/errors.js';
import { errCode } from './helpers/child.js';
import { tempDir } from './helpers/store.js';

describe('one copy of the code', () => {
  it("'trellis' resolves to dist/, and Node (not vite) loads it", () => {
    expect(import.meta.resolve('trellis')).toBe(new URL('../dist/src/index.js', import.meta.url).href);
    // vite's module runner rewrites imports to __vite_ssr_import_N__; Node's loader leaves them alone.
    expect(connect.toString()).not.toContain('__vite_ssr');
  });

  it('one TrellisError class: errors from inside the package are instances of the exported class', async () => {
    expect(InternalTrellisError).toBe(TrellisError);
    const { dir, cleanup } = tempDir();
    try {
      const err = await connect({ socket: join(dir, 'nobody.sock') }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TrellisError);
      expect(await errCode(Promise.reject(err))).toBe('ERR_DISCONNECTED');
    } finally {
      cleanup();
    }
  });
});
