/**
 * How many stores this thread serves. A client's handshake blocks its thread
 * for a moment while it waits for the answer (handshake.ts); a store of the
 * same thread could not answer meanwhile, so with one serving here the
 * client waits on a worker thread from the start. Module state is per thread
 * (each worker loads its own copy), which is exactly the scope that matters.
 */
let serving = 0;

/** A store of this thread starts listening; pair it with `storeStopped`. */
export function storeServing(): void {
  serving++;
}

export function storeStopped(): void {
  if (serving > 0) serving--;
}

/** Whether a store of this thread may be listening now. */
export function storeInThread(): boolean {
  return serving > 0;
}
