/**
 * Deterministic bytes, and comparisons that say where they fail. `expect(bytesMismatch(got, want)).toBeNull()`
 * fails with "byte 4093: got 0x00, want 0x07 (of 8388608 bytes)" instead of
 * "expected false to be true", and never prints megabytes of array.
 */

/** Null when the two views hold the same bytes, else where they first differ. */
export function bytesMismatch(got: ArrayBufferView, want: ArrayBufferView): string | null {
  const a = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
  const b = Buffer.from(want.buffer, want.byteOffset, want.byteLength);
  if (a.equals(b)) return null;
  if (a.length !== b.length) return `got ${a.length} bytes, want ${b.length}`;
  let i = 0;
  while (a[i] === b[i]) i++;
  const hex = (x: number) => `0x${x.toString(16).padStart(2, '0')}`;
  return `byte ${i}: got ${hex(a[i])}, want ${hex(b[i])} (of ${a.length} bytes)`;
}

/** Null when the two arrays are equal element for element (Object.is), else the first difference. */
export function elementMismatch(got: ArrayLike<unknown>, want: ArrayLike<unknown>): string | null {
  if (got.length !== want.length) return `got ${got.length} elements, want ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) return `element ${i}: got ${String(got[i])}, want ${String(want[i])}`;
  }
  return null;
}

/** The bytes of a tensor's (or any view's) data, without a copy. */
export function bytesOf(v: { data: ArrayBufferView } | ArrayBufferView): Buffer {
  const d = ArrayBuffer.isView(v) ? v : v.data;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

/** Deterministic bytes (an LCG), so a copy can be compared byte for byte and a failure replayed. */
export function pattern(n: number, seed: number): Uint8Array {
  const a = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    a[i] = x >>> 24;
    a[i + 1] = x >>> 16;
    a[i + 2] = x >>> 8;
    a[i + 3] = x;
  }
  return a;
}
