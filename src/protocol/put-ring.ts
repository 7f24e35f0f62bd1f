/**
 * The layout of the put ring, the shared memory through which a client puts
 * small objects with no round trip (docs/PROTOCOL.md "Put ring"); this file
 * is its one definition, for both ends.
 *
 * A client leases from the store a slab (a block of the arena, counted in
 * the store's memory when leased) and a block of object ids. A put copies
 * its bytes into the slab, at the slab's cursor, and writes a record into
 * its ring (one memfd per client, mapped read-write by the client and by the
 * store); the put is done once the record's COMMIT word holds the record's
 * sequence number (written last, with Atomics.store). The store drains every
 * ring before it answers any request, on a doorbell, and on a short timer
 * (every 4 ms) while clients keep putting.
 *
 * Ring: HEADER_WORDS int32 words, then RING_RECORDS records of RECORD_WORDS.
 * Record n (1, 2, ...) lives in slot (n - 1) % RING_RECORDS; its COMMIT word
 * is n as an int32. Word TAIL is the last sequence number the store has
 * taken in (the client may reuse every slot up to it); word SLEEP is 1 when
 * the store stopped polling this ring: the client that sets it back to 0
 * (compareExchange) sends the doorbell (a `ring` request without an answer).
 */

export const HEADER_WORDS = 16;
export const RING_RECORDS = 4096;
export const RECORD_WORDS = 16;
export const RING_BYTES = (HEADER_WORDS + RING_RECORDS * RECORD_WORDS) * 4;

/** Header words. */
export const H = { TAIL: 0, SLEEP: 1 } as const;

/** Word offsets inside a record. */
export const R = {
  COMMIT: 0,
  KIND: 1,
  DTYPE: 2,
  NDIM: 3,
  /** The lease the record belongs to (the lease reply's `lease`). */
  LEASE: 4,
  /** Offset inside the slab: always the slab's cursor (the end of the record before, aligned). */
  OFF: 5,
  SIZE: 6,
  /** The record's first id counter: the lease's next unused one. A Tensor takes two (its blob's, then its own). */
  COUNTER_HI: 7,
  COUNTER_LO: 8,
  DIMS: 9,
} as const;
/** Words DIMS + MAX_RING_DIMS .. RECORD_WORDS - 1 are reserved: zero. */
export const MAX_RING_DIMS = 4;

/** KIND values (the fast directory's, so a record and an entry agree). */
export const RING_KIND_BLOB = 1;
export const RING_KIND_TENSOR = 2;

/** Largest object a ring put carries; larger ones go by the socket (one copy is then the cheap part). */
export const RING_MAX_OBJECT = 64 * 1024;

/** Ids leased at a time; a Tensor takes two. */
export const LEASE_IDS = 4096;

/** Word offset of slot `seq` (1-based) in the ring. */
export function recordBase(seq: number): number {
  return HEADER_WORDS + ((seq - 1) % RING_RECORDS) * RECORD_WORDS;
}

/** Bytes per element of each DTYPE code (fast-directory.ts DTYPE_CODES order; a test keeps them in step with the codec). */
export const DTYPE_BYTES = [1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8] as const;
