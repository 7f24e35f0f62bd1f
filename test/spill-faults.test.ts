/**
 * Spilling when the disk fails (issue 8, defect 5): a blob whose spill write
 * failed stays spillable, so once the disk works again a put that needs its
 * room succeeds. The spill directory is broken by replacing it with a file,
 * which stops root too (a chmod would not).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesMismatch, pattern } from './helpers/bytes.js';
import { errCode } from './helpers/child.js';
import { startStore, tempDir } from './helpers/store.js';

const MIB = 1024 * 1024;

describe('spill faults', () => {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });

  it('a blob whose spill failed is spilled once the disk works again', async () => {
    const { dir, cleanup } = tempDir('trellis-spill-');
    stops.push(async () => cleanup());
    const spillDir = join(dir, 'spill');
    const env = await startStore({ size: 8 * MIB, segmentSize: 8 * MIB, spillDir });
    stops.push(env.stop);
    await using c = await connect({ socket: env.socket });
    const a = await c.putBlob(pattern(3 * MIB, 1));
    const b = await c.putBlob(pattern(3 * MIB, 2));

    // The disk goes away: the spill directory is now a file.
    rmSync(spillDir, { recursive: true });
    writeFileSync(spillDir, 'not a directory');
    expect(await errCode(c.putBlob(pattern(7 * MIB, 3)))).toBe('ERR_SPILL_FAILED');
    expect((await c.status()).memoryUsed).toBe(6 * MIB);

    // It comes back: both blobs must be spillable still, or 7 MiB cannot fit.
    rmSync(spillDir);
    mkdirSync(spillDir);
    const big = await c.putBlob(pattern(7 * MIB, 3));
    expect((await c.status()).spill).toMatchObject({ objects: 2, bytes: 6 * MIB });
    await c.delete(big);
    expect(bytesMismatch(await c.getBlob(a), pattern(3 * MIB, 1))).toBeNull();
    expect(bytesMismatch(await c.getBlob(b), pattern(3 * MIB, 2))).toBeNull();
  });
});
