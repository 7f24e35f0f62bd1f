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
 * While no store can be opened, calls answer ERR_STORE_UNAVAILABLE.
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

/** The link: the client to call, and whether a store is reachable now (what GET /readyz answers). */
export interface StoreLink {
  client: StoreClient;
  /** Resolves once a client is open (opening one now if there is none); ERR_STORE_UNAVAILABLE when none can be. */
  ready(): Promise<void>;
}

const unavailable = (e: unknown): TrellisError =>
  new TrellisError('ERR_STORE_UNAVAILABLE', `no store reachable: ${(e as Error).message}`, { cause: e });

/**
 * Opens no client up front: an API started before any store (a Helm
 * install, whose stores come up beside it) serves at once, answers
 * ERR_STORE_UNAVAILABLE where it needs a store, and the first call after
 * one appears connects.
 */
export function storeLink(open: () => Promise<StoreClient>): StoreLink {
  let current: StoreClient | undefined;
  let broken = true;
  let closed = false;
  let opening: Promise<StoreClient> | undefined;

  const live = (): Promise<StoreClient> => {
    if (closed) return Promise.reject(new TrellisError('ERR_CLOSED', 'the job service is closed'));
    if (current && !broken) return Promise.resolve(current);
    opening ??= open()
      .then(
        (c) => {
          const old = current;
          current = c;
          broken = false;
          old?.close().catch(() => {});
          return c;
        },
        (e) => {
          throw unavailable(e);
        },
      )
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
    await current?.close();
  };

  const client = new Proxy({} as StoreClient, {
    get(_target, prop) {
      if (prop === 'close' || prop === Symbol.asyncDispose) return close;
      if (current) {
        const v = (current as unknown as Record<string | symbol, unknown>)[prop];
        if (SYNC.has(prop) || typeof v !== 'function') return typeof v === 'function' ? v.bind(current) : v;
      } else if (SYNC.has(prop) || typeof prop === 'symbol' || prop === 'then') {
        // No store yet: nothing to answer with (the job service reads none of these), and not a thenable.
        return undefined;
      }
      return (...args: unknown[]) => call(prop as string, args);
    },
  });
  return { client, ready: async () => void (await live()) };
}
