/**
 * Faulting a transfer's destination in ahead of the socket
 * (src/store/prefault.ts), on a real memfd: the pages become resident, in
 * order, a chunk at a time; a stop takes effect at the next chunk; no byte
 * changes, written before or after.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../dist/src/native.js';
import { PREFAULT_MIN_BYTES, prefault, worthPrefault } from '../dist/src/store/prefault.js';

const MIB = 1024 * 1024;

function memfd(size: number) {
  const fd = native.memfdCreate('test-prefault', size);
  return { fd, bytes: new Uint8Array(native.map(fd, size, true)) };
}

describe('prefault', () => {
  it('faults every page of the views in and changes no byte', async () => {
    const m = memfd(64 * MIB);
    try {
      m.bytes.fill(7, 0, 4096);
      m.bytes[40 * MIB] = 9;
      expect(native.residentBytes(m.fd)).toBe(8192);
      // Two views of one segment, as two blobs of one transfer are.
      await prefault([m.bytes.subarray(0, 24 * MIB), m.bytes.subarray(24 * MIB)], () => true);
      expect(native.residentBytes(m.fd)).toBe(64 * MIB);
      expect([m.bytes[0], m.bytes[4095], m.bytes[4096], m.bytes[40 * MIB], m.bytes[64 * MIB - 1]]).toEqual([
        7, 7, 0, 9, 0,
      ]);
    } finally {
      native.closeFd(m.fd);
    }
  });

  it('stops at the next chunk once the transfer no longer wants it', async () => {
    const m = memfd(64 * MIB);
    try {
      let asked = 0;
      // Wanted for the first chunk only: 16 MiB, then it stops.
      await prefault([m.bytes], () => asked++ === 0);
      expect(native.residentBytes(m.fd)).toBe(16 * MIB);
      expect(asked).toBe(2);
    } finally {
      native.closeFd(m.fd);
    }
  });

  it('is only when asked for, into unreserved arenas, for transfers of at least 8 MiB', () => {
    expect(PREFAULT_MIN_BYTES).toBe(8 * MIB);
    expect([
      worthPrefault({ prefault: true }, [8 * MIB]),
      worthPrefault({ reserve: false, prefault: true }, [4 * MIB, 4 * MIB]),
      worthPrefault({ prefault: true }, [8 * MIB - 1]),
      worthPrefault({ reserve: true, prefault: true }, [1024 * MIB]),
      worthPrefault({}, [1024 * MIB]),
      worthPrefault({ prefault: false }, [1024 * MIB]),
    ]).toEqual([true, true, false, false, false, false]);
  });
});
