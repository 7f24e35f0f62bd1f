/**
 * Faulting a transfer's destination in ahead of the socket.
 *
 * On this kind of VM a page the guest left free for more than about two
 * seconds has been handed back to the host (virtio-balloon free page
 * reporting: /sys/module/page_reporting), and the first write to it is a
 * hypervisor fault, ~6x slower than a write into a page the guest freed a
 * moment ago (bench/fresh-pages.js). A store without --reserve receives a
 * migration or an RPC put into such pages, and paid every fault inline, on
 * the thread that reads the socket: that was the "first new store" anomaly
 * (0.4-0.5 GB/s against ~1.5 GB/s when the pages came from a store that had
 * just exited). Here a libuv thread faults the blobs in, CHUNK bytes at a
 * time, in the order the bytes will arrive, while the socket fills the
 * earlier parts; it stops as soon as the transfer no longer wants it.
 *
 * Faulting in never changes a byte (MADV_POPULATE_READ), so it is harmless
 * on pages the socket has written already, or on a block freed and reused
 * meanwhile; what it can leave behind after a failed transfer is at most
 * one chunk of pages resident in a freed range, until that range is punched
 * again.
 */
import { native } from '../native.js';

/** Faulted in per step: small enough that a stop takes effect soon, large enough to keep a thread busy. */
const CHUNK = 16 * 1024 * 1024;
/** Below this a transfer is over before a thread could help. */
export const PREFAULT_MIN_BYTES = 8 * 1024 * 1024;

/**
 * Faults `views` in on a libuv thread, in order, while `wanted()` says so.
 * Resolves when done or stopped; never rejects (a failed madvise only means
 * the socket's writes fault as before).
 */
export async function prefault(views: Uint8Array[], wanted: () => boolean): Promise<void> {
  try {
    for (const v of views) {
      for (let off = 0; off < v.byteLength; off += CHUNK) {
        if (!wanted()) return;
        const len = Math.min(CHUNK, v.byteLength - off);
        await native.populateAsync(v.buffer as ArrayBuffer, v.byteOffset + off, len);
      }
    }
  } catch {
    // best effort
  }
}

/**
 * Whether blobs of these sizes are faulted in ahead: only when asked for
 * (StoreOptions.prefault), into an unreserved arena, for enough bytes. Off
 * by default because on 2 vCPUs the extra thread competes with the sender
 * and the receiver: bench/rpc-transfer.js measured prefault on against off
 * at 0.78x (migrate) and 0.83x (put) at load 4-17, and 3.15x and 1.53x only
 * at load 22, where any extra thread wins CPU share.
 */
export function worthPrefault(store: { reserve?: boolean; prefault?: boolean }, sizes: number[]): boolean {
  if (store.reserve || store.prefault !== true) return false;
  let n = 0;
  for (const s of sizes) n += s;
  return n >= PREFAULT_MIN_BYTES;
}
