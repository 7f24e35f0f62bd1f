/**
 * The layout of the fast path's shared memory, which both ends read and
 * write without a message: the store's object directory (one memfd, mapped
 * read-only by clients) and each client's pin page (one memfd per client,
 * mapped read-write by that client and read by the store). docs/PROTOCOL.md
 * ("Fast path") describes the protocol; this file is its one definition.
 *
 * Directory: DIRECTORY_ENTRIES entries of ENTRY_WORDS int32 words. The entry
 * of object counter n (the low 48 bits of its id) is n % DIRECTORY_ENTRIES;
 * when that entry is taken, the object is not published (the socket path
 * serves it). Word SERIAL is 0 when the entry is empty, otherwise a serial
 * unique among live entries; the store writes it last on publish and zeroes
 * it first on retract, so a reader that sees the same serial before and after
 * reading the other words read them whole (a seqlock whose sequence is the
 * serial).
 *
 * Pin page: PIN_WORDS int32 words. Word PIN_HIGH is one past the highest slot
 * in use; word PIN_GETS counts the client's fast gets (for the store's
 * figures); slots PIN_FIRST_SLOT.. hold the serials the client pins (0: free).
 */

export const DIRECTORY_ENTRIES = 65_536;
export const ENTRY_WORDS = 16;
export const DIRECTORY_BYTES = DIRECTORY_ENTRIES * ENTRY_WORDS * 4;

/** Word offsets inside an entry. */
export const E = {
  SERIAL: 0,
  COUNTER_HI: 1,
  COUNTER_LO: 2,
  KIND: 3,
  DTYPE: 4,
  NDIM: 5,
  SEG: 6,
  OFF: 7,
  SIZE: 8,
  BLOB_HI: 9,
  BLOB_LO: 10,
  DIMS: 11,
} as const;
/** Most tensor dimensions an entry holds; higher ranks go by the socket. */
export const MAX_DIMS = 4;

/** KIND values. */
export const KIND_BLOB = 1;
export const KIND_TENSOR = 2;

/** DTYPE values are indexes here (the tensor codec's dtype names; a test keeps them in step). */
export const DTYPE_CODES = [
  'bool',
  'int8',
  'int16',
  'int32',
  'int64',
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'float16',
  'float32',
  'float64',
] as const;

export const PIN_WORDS = 1024;
export const PIN_BYTES = PIN_WORDS * 4;
export const PIN_HIGH = 0;
export const PIN_GETS = 1;
export const PIN_FIRST_SLOT = 2;

/** The 48-bit counter of an object id ("o" + 4 hex instance + 12 hex counter), split in two words. */
export function counterWords(counter: number): [hi: number, lo: number] {
  return [Math.floor(counter / 0x1_0000_0000), counter >>> 0];
}

export function entryIndex(counter: number): number {
  return counter % DIRECTORY_ENTRIES;
}
