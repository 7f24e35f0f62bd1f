/**
 * The bytes of a file, read in order straight into where they go: a plain
 * file is read with positional reads into the destination (store memory, no
 * staging buffer), a gzipped one is inflated as a stream and each inflated
 * chunk copied once into the destination. Either way the file is never held
 * whole in the JS heap.
 */
import { createReadStream } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { TrellisError } from '../errors.js';

/** Largest single read: progress is reported at least this often. */
const READ_SLICE = 8 * 1024 * 1024;

export interface ByteSource {
  readonly path: string;
  /** Bytes of the file on disk (compressed, for gzip). */
  readonly fileSize: number;
  /** Bytes the reader will deliver, when known before reading (not for gzip). */
  readonly size: number | undefined;
  /** Bytes delivered so far. */
  readonly position: number;
  /** Fills `dst` with the next bytes; ERR_FILE_TRUNCATED if the file ends first. `onBytes` sees progress. */
  readInto(dst: Uint8Array, onBytes?: (n: number) => void): Promise<void>;
  /** Whether any byte is left after what was read. */
  atEnd(): Promise<boolean>;
  close(): Promise<void>;
}

/** Wraps fs errors (ENOENT, EISDIR, EACCES...) as ERR_FILE_UNREADABLE. */
export function unreadable(path: string, e: unknown): TrellisError {
  if (e instanceof TrellisError) return e;
  const err = e as NodeJS.ErrnoException;
  return new TrellisError('ERR_FILE_UNREADABLE', `cannot read ${path}: ${err.code ?? err.message}`, { cause: e });
}

export function truncated(path: string, what: string): TrellisError {
  return new TrellisError('ERR_FILE_TRUNCATED', `${path} ends before ${what}`);
}

/** Opens a file for reading; its failures are ERR_FILE_UNREADABLE. */
async function openFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (e) {
    throw unreadable(path, e);
  }
}

/** Opens `path`; a file starting with the gzip magic (1f 8b) is inflated on the fly, unless `inflate` is false. */
export async function openBytes(path: string, opts: { inflate?: boolean } = {}): Promise<ByteSource> {
  const fh = await openFile(path);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TrellisError('ERR_FILE_UNREADABLE', `cannot read ${path}: not a regular file`);
    const magic = new Uint8Array(2);
    const { bytesRead } = await fh.read(magic, 0, 2, 0);
    if ((opts.inflate ?? true) && bytesRead === 2 && magic[0] === 0x1f && magic[1] === 0x8b) {
      await fh.close();
      return new GunzipSource(path, st.size);
    }
    return new FileSource(path, fh, st.size);
  } catch (e) {
    await fh.close().catch(() => {});
    throw unreadable(path, e);
  }
}

class FileSource implements ByteSource {
  position = 0;
  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly fileSize: number,
  ) {}

  get size(): number {
    return this.fileSize;
  }

  async readInto(dst: Uint8Array, onBytes?: (n: number) => void): Promise<void> {
    let done = 0;
    while (done < dst.byteLength) {
      const n = Math.min(READ_SLICE, dst.byteLength - done);
      let got: number;
      try {
        ({ bytesRead: got } = await this.fh.read(dst, done, n, this.position));
      } catch (e) {
        throw unreadable(this.path, e);
      }
      if (got === 0) throw truncated(this.path, `the ${dst.byteLength} bytes wanted at offset ${this.position - done}`);
      done += got;
      this.position += got;
      onBytes?.(got);
    }
  }

  async atEnd(): Promise<boolean> {
    return this.position >= this.fileSize;
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

class GunzipSource implements ByteSource {
  position = 0;
  readonly size = undefined;
  private readonly chunks: AsyncIterator<Buffer>;
  private readonly stream: NodeJS.ReadableStream & { destroy(): void };
  private pending: Buffer | null = null;

  constructor(
    readonly path: string,
    readonly fileSize: number,
  ) {
    // 1 MiB output chunks instead of zlib's 16 KiB: fewer trips through the stream machinery per byte.
    const gunzip = createGunzip({ chunkSize: 1024 * 1024 });
    const file = createReadStream(path);
    file.on('error', (e) => gunzip.destroy(e));
    this.stream = file.pipe(gunzip);
    this.chunks = gunzip[Symbol.asyncIterator]();
  }

  private async nextChunk(): Promise<Buffer | null> {
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      return p;
    }
    try {
      const r = await this.chunks.next();
      return r.done ? null : (r.value as Buffer);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      // zlib says "unexpected end of file" for a cut stream, Z_DATA_ERROR for damaged bytes.
      if (err.code === 'Z_BUF_ERROR') throw truncated(this.path, 'the end of its gzip stream');
      if (err.code === 'Z_DATA_ERROR')
        throw new TrellisError('ERR_FILE_FORMAT', `${this.path}: damaged gzip data: ${err.message}`);
      throw unreadable(this.path, e);
    }
  }

  async readInto(dst: Uint8Array, onBytes?: (n: number) => void): Promise<void> {
    let done = 0;
    while (done < dst.byteLength) {
      const c = await this.nextChunk();
      if (!c) throw truncated(this.path, `the ${dst.byteLength} bytes wanted at offset ${this.position - done}`);
      const n = Math.min(c.length, dst.byteLength - done);
      dst.set(n === c.length ? c : c.subarray(0, n), done);
      if (n < c.length) this.pending = c.subarray(n);
      done += n;
      this.position += n;
      onBytes?.(n);
    }
  }

  async atEnd(): Promise<boolean> {
    for (;;) {
      const c = await this.nextChunk();
      if (!c) return true;
      if (c.length > 0) {
        this.pending = c;
        return false;
      }
    }
  }

  async close(): Promise<void> {
    this.stream.destroy();
  }
}

/** The first `head` and last `tail` bytes of a file and its size (magic numbers and footers). */
export async function fileEnds(
  path: string,
  head: number,
  tail = 0,
): Promise<{ size: number; head: Buffer; tail: Buffer }> {
  const fh = await openFile(path);
  try {
    const { size } = await fh.stat();
    const h = Buffer.alloc(Math.min(head, size));
    await fh.read(h, 0, h.length, 0);
    const t = Buffer.alloc(size >= head + tail ? tail : 0);
    if (t.length > 0) await fh.read(t, 0, t.length, size - t.length);
    return { size, head: h, tail: t };
  } catch (e) {
    throw unreadable(path, e);
  } finally {
    await fh.close();
  }
}
