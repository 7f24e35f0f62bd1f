/**
 * Spill files: one file per blob, named by id, in the store's spill
 * directory. Writes go to a temporary name and are renamed into place, so a
 * crash never leaves a file that looks whole but is not.
 *
 * I/O is synchronous: spilling happens inside an allocation, which must finish
 * before the request that needed the memory can be answered, and keeping it in
 * one synchronous step means no other request can see a half-spilled blob.
 */
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { TrellisError } from '../errors.js';

export class SpillDir {
  private bytes = 0;
  private count = 0;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  get spilledBytes(): number {
    return this.bytes;
  }

  get spilledCount(): number {
    return this.count;
  }

  write(id: string, data: Uint8Array): string {
    const path = join(this.dir, `${id}.blob`);
    const tmp = `${path}.tmp`;
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        let off = 0;
        while (off < data.byteLength) off += writeSync(fd, data, off, data.byteLength - off);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
    } catch (e) {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // the directory itself is gone or broken: there is no temporary file to remove
      }
      throw new TrellisError('ERR_SPILL_FAILED', `spilling ${id} to ${path} failed: ${(e as Error).message}`, {
        cause: e,
      });
    }
    this.bytes += data.byteLength;
    this.count++;
    return path;
  }

  /** Reads a spilled blob into `target` (exactly its size) and deletes the file. */
  restore(path: string, target: Uint8Array): void {
    try {
      const fd = openSync(path, 'r');
      try {
        const size = fstatSync(fd).size;
        if (size !== target.byteLength) {
          throw new Error(`file holds ${size} bytes, expected ${target.byteLength}`);
        }
        let off = 0;
        while (off < size) {
          const n = readSync(fd, target, off, size - off, off);
          if (n === 0) throw new Error('unexpected end of file');
          off += n;
        }
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      throw new TrellisError('ERR_SPILL_FAILED', `restoring ${path} failed: ${(e as Error).message}`, { cause: e });
    }
    this.discard(path, target.byteLength);
  }

  discard(path: string, size: number): void {
    try {
      unlinkSync(path);
    } catch {
      // already gone: nothing to give back
    }
    this.bytes -= size;
    this.count--;
  }
}
