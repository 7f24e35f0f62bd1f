/**
 * Who can reach a store's UNIX socket (docs/SECURITY.md): 0600 by default,
 * 0660 with a group when asked, and nothing wider — a socket others can
 * connect to (Vineyard's is 0777) is refused at start, by the library and by
 * `trellis store`.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { StoreServer } from 'trellis/store';
import { afterEach, describe, expect, it } from 'vitest';
import { errCode } from './helpers/child.js';
import { CLI, spawnStore, tempDir } from './helpers/store.js';

const stops: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});

describe('the store socket', () => {
  it('is 0600 by default, and 0660 owned by --socket-group when asked', async () => {
    const plain = await spawnStore(['--size', '16M']);
    stops.push(plain.stop);
    expect(statSync(plain.socket).mode & 0o777).toBe(0o600);
    const gid = process.getgid!();
    const grouped = await spawnStore(['--size', '16M', '--socket-mode', '0660', '--socket-group', String(gid)]);
    stops.push(grouped.stop);
    const st = statSync(grouped.socket);
    expect({ mode: st.mode & 0o777, gid: st.gid }).toEqual({ mode: 0o660, gid });
  });

  it('refuses any mode that opens it to others (0666, 0777) or is neither 0600 nor 0660', async () => {
    const { dir, cleanup } = tempDir();
    try {
      for (const socketMode of [0o777, 0o666, 0o606, 0o640]) {
        expect(await errCode(StoreServer.start({ socket: join(dir, 's.sock'), size: 16 << 20, socketMode }))).toBe(
          'ERR_BAD_REQUEST',
        );
      }
      const r = spawnSync(
        process.execPath,
        [CLI, 'store', '--socket', join(dir, 'c.sock'), '--size', '16M', '--socket-mode', '0777'],
        { encoding: 'utf8', timeout: 30_000 },
      );
      expect({ status: r.status, stderr: r.stderr }).toEqual({
        status: 1,
        stderr:
          'trellis: ERR_BAD_REQUEST: socketMode must be 0600 (owner) or 0660 (owner and --socket-group), got 0777\n',
      });
    } finally {
      cleanup();
    }
  });
});
