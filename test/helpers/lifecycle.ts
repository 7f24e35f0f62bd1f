/**
 * Every public method of a store client, for use-after-close and
 * dead-store tests that check each method fails with its own code.
 */
import type { StoreClient } from 'trellis';
import { errCode } from './child.js';

/**
 * Every method of the one client interface (IPC and RPC), called with valid
 * arguments: `id` an object id, `held` one the client holds (for release).
 */
export function everyMethod(c: StoreClient, id: string, held = id): Record<string, () => unknown> {
  return {
    put: () => c.put(new Float32Array([1])),
    putBlob: () => c.putBlob(new Uint8Array([1])),
    putObject: () => c.putObject({ typename: 'Dataset', members: [id] }),
    createBlob: () => c.createBlob(16),
    createTensor: () => c.createTensor('float32', [4]),
    get: () => c.get(id),
    getMany: () => c.getMany([id]),
    getSync: () => c.getSync(id),
    getBlob: () => c.getBlob(id),
    release: () => c.release(held),
    delete: () => c.delete(id),
    putName: () => c.putName('n', id),
    getName: () => c.getName('n'),
    dropName: () => c.dropName('n'),
    listNames: () => c.listNames(),
    list: () => c.list(),
    status: () => c.status(),
    // the cluster methods
    persist: () => c.persist(id),
    migrate: () => c.migrate(id),
    instances: () => c.instances(),
    listGlobal: () => c.listGlobal(),
    createDataset: () => c.createDataset('ds', [id]),
    locate: () => c.locate('ds'),
  };
}

/** The code each method fails with ('no error' when it does not), by method name. */
export async function codesOf(methods: Record<string, () => unknown>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, fn] of Object.entries(methods)) out[name] = await errCode(fn);
  return out;
}

/** `{ method: code }` for every method: what a test expects when all fail alike. */
export function all(methods: Record<string, unknown>, code: string): Record<string, string> {
  return Object.fromEntries(Object.keys(methods).map((k) => [k, code]));
}
