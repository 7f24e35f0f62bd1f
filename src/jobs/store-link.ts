/**
 * The job service's link to a store: one client, replaced when its store has
 * gone away. The API lives longer than any one store under it (a DaemonSet's
 * rolling update, a crash, a restart by hand); with a plain client every call
 * after that answered ERR_DISCONNECTED until the API itself was restarted.
 *
 * Here a call that finds the connection gone marks the link broken; the next
 * call opens a new client (over etcd: to whichever store is registered then).
 * Reads are tried once more on the new client, since repeating them changes
 * nothing; writes are not (a createDataset may have reached the store before
 * the connection broke), so their caller sees ERR_DISCONNECTED once, as before.
 */

import type { StoreClient } from '../client/store-client.js';
import { TrellisError } from '../errors.js';

/** Calls that only read: safe to repeat on a new connection. */
const READS = new Set<string>([
  'get',
  'getMany',
  'getBlob',
  'getName',
  'listNames',
  'list',
  'listGlobal',
  'listPage',
  'locate',
  'status',
  'instances',
]);

/** Synchronous members, answered by the current client as they are. */
const SYNC = new Set<string | symbol>(['getSync', 'transport', 'storeId', 'instanceId']);

const lost = (e: unknown): boolean => e instanceof TrellisError && e.code === 'ERR_DISCONNECTED';

export async function storeLink(open: () => Promise<StoreClient>): Promise<StoreClient> {
  let current = await open();
  let broken = false;
  let closed = false;
  let opening: Promise<StoreClient> | undefined;

  const live = (): Promise<StoreClient> => {
    if (!broken || closed) return Promise.resolve(current);
    opening ??= open()
      .then((c) => {
        const old = current;
        current = c;
        broken = false;
        old.close().catch(() => {});
        return c;
      })
      .finally(() => {
        opening = undefined;
      });
    return opening;
  };

  const call = async (name: string, args: unknown[]): Promise<unknown> => {
    const run = (c: StoreClient) =>
      (c as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name]!(...args);
    const c = await live();
    try {
      return await run(c);
    } catch (e) {
      if (!lost(e) || closed) throw e;
      broken = true;
      if (!READS.has(name)) throw e;
      return run(await live());
    }
  };

  const close = async (): Promise<void> => {
    closed = true;
    await opening?.catch(() => {});
    await current.close();
  };

  return new Proxy({} as StoreClient, {
    get(_target, prop) {
      if (prop === 'close' || prop === Symbol.asyncDispose) return close;
      const v = (current as unknown as Record<string | symbol, unknown>)[prop];
      if (SYNC.has(prop) || typeof v !== 'function') return typeof v === 'function' ? v.bind(current) : v;
      return (...args: unknown[]) => call(prop as string, args);
    },
  });
}
