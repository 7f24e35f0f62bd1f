/**
 * Spill files: one file per blob, named by id, in the store's spill
 * directory. Writes go to a temporary name and are renamed into place, so a
 * crash never leaves a file that looks whole but is not.
 *
 * The directory belongs to one store run at a time (a LOCK file holds its
 * pid). Spill files never outlive their run: objects die with the store, so
 * at start the files a crashed run left (whole or temporary) are removed, and
 * at a clean stop its own are. Beside them, `ids` holds the high-water mark
 * of the object counter, so a restarted store never hands out an id (and a
 * file name) a previous run used.
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
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { TrellisError } from '../errors.js';
import type { IdLedger } from './ids.js';

/** What a store writes here: spill files and their temporaries; nothing else is ever removed. */
const SPILL_FILE = /^o[0-9a-f]{16}\.blob(\.tmp)?$/;
/** Directories held by stores of this process (a pid in LOCK cannot tell them apart). */
const heldHere = new Set<string>();

export class SpillDir implements IdLedger {
  private bytes = 0;
  private count = 0;
  private readonly lock: string;
  private readonly ledger: string;
  /** Highest id counter a previous run of a store on this directory may have used. */
  readonly floor: number;
  /** Files a previous run left behind, removed at open. */
  readonly staleRemoved: number;

  /** Takes the directory for this store (ERR_OBJECT_EXISTS while a live store holds it) and cleans it. */
  constructor(readonly dir: string) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new TrellisError('ERR_SPILL_FAILED', `cannot create spill directory ${dir}: ${(e as Error).message}`);
    }
    this.lock = join(dir, 'LOCK');
    this.ledger = join(dir, 'ids');
    const holder = heldHere.has(resolve(dir)) ? process.pid : lockHolder(this.lock);
    if (holder !== null) {
      throw new TrellisError('ERR_OBJECT_EXISTS', `spill directory ${dir} is in use by the store with pid ${holder}`);
    }
    writeFileSync(this.lock, `${process.pid}\n`, { mode: 0o600 });
    heldHere.add(resolve(dir));
    this.staleRemoved = this.removeSpillFiles();
    const n = Number.parseInt(readText(this.ledger) ?? '0', 10);
    this.floor = Number.isSafeInteger(n) && n > 0 ? n : 0;
  }

  /** Records that ids up to `upTo` may be in use, before any of them is handed out. */
  reserve(upTo: number): void {
    const tmp = `${this.ledger}.tmp`;
    try {
      writeFileSync(tmp, `${upTo}\n`, { mode: 0o600 });
      renameSync(tmp, this.ledger);
    } catch (e) {
      throw new TrellisError('ERR_SPILL_FAILED', `recording ids in ${this.ledger} failed: ${(e as Error).message}`);
    }
  }

  /** The store stops: its spill files go (its objects die with it), and so does the lock. */
  close(): void {
    heldHere.delete(resolve(this.dir));
    try {
      this.removeSpillFiles();
      rmSync(this.lock, { force: true });
    } catch {
      // the directory is already gone
    }
  }

  private removeSpillFiles(): number {
    let n = 0;
    for (const f of readdirSync(this.dir)) {
      if (!SPILL_FILE.test(f)) continue;
      rmSync(join(this.dir, f), { force: true });
      n++;
    }
    return n;
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

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** The pid in a lock file if that process still lives (and is not this one), else null. */
function lockHolder(lock: string): number | null {
  const pid = Number.parseInt(readText(lock) ?? '', 10);
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (e) {
    // EPERM: alive, owned by someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM' ? pid : null;
  }
}
