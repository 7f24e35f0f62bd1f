/**
 * Names are clients' strings (issue 8, defect 6): `__proto__` and other
 * names an object literal treats specially are bound, resolve and appear in
 * listNames like any other, with the local backend and with etcd.
 */
import { connect } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { startStore } from './helpers/store.js';

const SPECIAL = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', '__defineGetter__'];

describe.each(['local', 'etcd'] as const)('names that are Object.prototype keys, %s backend', (backend) => {
  let etcd: EtcdHandle | null = null;
  let env: Awaited<ReturnType<typeof startStore>>;
  beforeAll(async () => {
    if (backend === 'etcd') etcd = await startEtcd();
    env = await startStore({
      size: 16 * 1024 * 1024,
      ...(etcd ? { meta: etcd.url, metaPrefix: `/names-keys-${process.pid}` } : {}),
    });
  });
  afterAll(async () => {
    await env?.stop();
    await etcd?.stop();
  });

  it('are bound, resolve, and are listed', async () => {
    await using c = await connect({ socket: env.socket });
    const ids: string[] = [];
    for (const name of SPECIAL) {
      const id = await c.putBlob(new TextEncoder().encode(name));
      await c.putName(name, id);
      ids.push(id);
    }
    for (const [i, name] of SPECIAL.entries()) expect(await c.getName(name)).toBe(ids[i]);
    const listed = await c.listNames();
    expect(Object.entries(listed).sort()).toEqual(SPECIAL.map((n, i) => [n, ids[i]]).sort());
    expect(Object.getPrototypeOf(listed)).toBe(Object.prototype);
    expect(Object.entries(await c.listNames('__')).sort()).toEqual(
      SPECIAL.flatMap((n, i) => (n.startsWith('__') ? [[n, ids[i]]] : [])).sort(),
    );
    await c.dropName('__proto__');
    expect(Object.keys(await c.listNames('__proto'))).toEqual([]);
  });
});
