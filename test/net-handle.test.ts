/**
 * The one adapter over net's private `_handle` (src/store/net-handle.ts):
 * what it does with real sockets, and that it says "cannot" (null) where the
 * callers then fall back, rather than throwing or guessing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adoptWithOnread, socketFd } from '../dist/src/store/net-handle.js';

const dirs: string[] = [];
const closers: (() => void)[] = [];

afterEach(() => {
  for (const c of closers.splice(0)) c();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A UNIX-socket server and one client connected to it; resolves with the accepted socket. */
async function pair(pauseOnConnect: boolean): Promise<{ accepted: Socket; client: Socket; server: Server }> {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-net-'));
  dirs.push(dir);
  const path = join(dir, 's.sock');
  let onAccept: (s: Socket) => void = () => {};
  const accepted = new Promise<Socket>((resolve) => {
    onAccept = resolve;
  });
  const server = createServer({ pauseOnConnect }, (s) => onAccept(s));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const client = connect(path);
  const s = await accepted;
  closers.push(() => {
    client.destroy();
    s.destroy();
    server.close();
  });
  return { accepted: s, client, server };
}

describe('net-handle', () => {
  it('socketFd gives the descriptor of a connected socket and null for a socket without one', async () => {
    const { accepted } = await pair(false);
    const fd = socketFd(accepted);
    expect(typeof fd).toBe('number');
    expect(fd).toBeGreaterThanOrEqual(0);
    expect(socketFd(new Socket())).toBeNull();
    accepted.destroy();
    expect(socketFd(accepted)).toBeNull();
  });

  it('adoptWithOnread rewraps a paused accepted socket so reads land in the buffer it picks', async () => {
    const { accepted, client } = await pair(true);
    const mine = Buffer.alloc(64);
    const got = new Promise<string>((resolve) => {
      const adopted = adoptWithOnread(accepted, {
        buffer: () => mine,
        callback: (n, buf) => {
          expect(buf).toBe(mine);
          resolve(mine.toString('utf8', 0, n));
          return true;
        },
      });
      expect(adopted).toBeInstanceOf(Socket);
      closers.push(() => adopted?.destroy());
    });
    client.write('hello');
    expect(await got).toBe('hello');
    expect(accepted.destroyed).toBe(true);
  });

  it('adoptWithOnread returns null (the caller reads data events) for a socket already reading or without a handle', async () => {
    const { accepted } = await pair(false);
    const onread = { buffer: () => Buffer.alloc(8), callback: () => true };
    expect(adoptWithOnread(accepted, onread)).toBeNull();
    expect(accepted.destroyed).toBe(false);
    expect(adoptWithOnread(new Socket(), onread)).toBeNull();
  });
});
