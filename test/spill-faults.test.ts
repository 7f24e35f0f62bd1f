/**
 * Spilling when the disk fails (issue 8, defects 4 and 5): a blob whose spill
 * write failed stays spillable, so once the disk works again a put that needs
 * its room succeeds (the spill directory is broken by replacing it with a
 * file, which stops root too; a chmod would not). And spill files never
 * outlive a crash: a store killed with -9 and restarted on the same directory
 * removes what the dead run left, and never reuses its ids.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesMismatch, pattern } from './helpers/bytes.js';
import { errCode } from './helpers/child.js';
import { spawnStore, startStore, tempDir } from './helpers/store.js';

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

  it('a store killed mid-spill and restarted on the same directory leaves no stale file and reuses no id', async () => {
    const { dir, cleanup } = tempDir('trellis-spill-');
    stops.push(async () => cleanup());
    const spillDir = join(dir, 'spill');
    const args = ['--size', '8M', '--segment-size', '8M', '--spill-dir', spillDir];
    const first = await spawnStore(args);
    stops.push(async () => void (await first.stop()));
    const oldIds: string[] = [];
    {
      await using c = await connect({ socket: first.socket });
      for (let i = 0; i < 12; i++) oldIds.push(await c.putBlob(pattern(MIB, i)));
      expect((await c.status()).spill.objects).toBeGreaterThan(0);
    }
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    // What the dead run left: its spill files, plus a temporary one as a write cut short would.
    const left = readdirSync(spillDir).filter((f) => f.endsWith('.blob'));
    expect(left.length).toBeGreaterThan(0);
    writeFileSync(join(spillDir, `${oldIds[11]}.blob.tmp`), 'half');

    const second = await spawnStore(args);
    stops.push(async () => void (await second.stop()));
    expect(readdirSync(spillDir).sort()).toEqual(['LOCK', 'ids']);
    await using c = await connect({ socket: second.socket });
    const newIds: string[] = [];
    for (let i = 0; i < 12; i++) newIds.push(await c.putBlob(pattern(MIB, 100 + i)));
    expect(newIds.filter((id) => oldIds.includes(id))).toEqual([]);
    expect(newIds.filter((id) => id <= oldIds[oldIds.length - 1])).toEqual([]);
    // The new run's spill files are its own objects, byte-exact.
    expect(readdirSync(spillDir).filter((f) => f.endsWith('.blob') && oldIds.includes(f.slice(0, 17)))).toEqual([]);
    expect(bytesMismatch(await c.getBlob(newIds[0]), pattern(MIB, 100))).toBeNull();
  });

  it('a second store on a spill directory a live store holds refuses to start', async () => {
    const { dir, cleanup } = tempDir('trellis-spill-');
    stops.push(async () => cleanup());
    const spillDir = join(dir, 'spill');
    const env = await startStore({ size: 8 * MIB, spillDir });
    stops.push(env.stop);
    const other = tempDir('trellis-spill-');
    stops.push(async () => other.cleanup());
    expect(await errCode(startStore({ size: 8 * MIB, spillDir, socket: join(other.dir, 's.sock') }))).toBe(
      'ERR_OBJECT_EXISTS',
    );
  });
});
