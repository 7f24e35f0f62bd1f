/**
 * Process-level faults: a reader that writes into sealed memory, and a client
 * killed with SIGKILL while it holds references, unsealed blobs and a name
 * wait. The store must come out of each with nothing leaked.
 */

import { connect, type Tensor } from 'trellis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bytesMismatch, pattern } from './helpers/bytes.js';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { startStore } from './helpers/store.js';

const MIB = 1024 * 1024;

describe('faults', () => {
  let env: Awaited<ReturnType<typeof startStore>>;
  beforeEach(async () => {
    env = await startStore({ size: 64 * MIB });
  });
  afterEach(async () => {
    await killChildren();
    await env.stop();
  });

  it('a reader writing into a sealed view is killed by the OS and the data stays unchanged', async () => {
    await using c = await connect({ socket: env.socket });
    const data = pattern(MIB, 5);
    const id = await c.put(data);
    const child = startChild(`
      const c = await connect({ socket: ${JSON.stringify(env.socket)} });
      const t = await c.get(${JSON.stringify(id)});
      send({ first: t.data[0], length: t.data.length });
      await command();
      t.data[12345] = 0xee; // a read-only shared mapping: this store faults
      send({ survived: true, value: t.data[12345] });
    `);
    expect(await child.next()).toEqual({ first: data[0], length: MIB });
    child.tell('write');
    const exit = await child.exited;
    expect(exit.code).toBeNull();
    expect(['SIGSEGV', 'SIGBUS']).toContain(exit.signal);

    const t = (await c.get(id)) as Tensor;
    expect(bytesMismatch(t.data, data)).toBeNull();
    // The dead reader's reference went with its connection.
    await eventually(async () => (await c.status()).connections === 1, 'the dead reader is dropped');
    const [summary] = (await c.list({ typename: 'Tensor' })).filter((o) => o.id === id);
    expect(summary.references).toBe(1); // ours only
  });

  it('kill -9 of a client gives back its references, unsealed blobs and name waits', async () => {
    await using c = await connect({ socket: env.socket });
    const keep = await c.put(pattern(2 * MIB, 1));
    const doomed = await c.put(pattern(2 * MIB, 2));
    const base = await c.status();

    const child = startChild(`
      const c = await connect({ socket: ${JSON.stringify(env.socket)}, name: 'doomed client' });
      await c.get(${JSON.stringify(keep)});
      await c.get(${JSON.stringify(doomed)});
      const a = await c.createBlob(${3 * MIB});
      const b = await c.createBlob(${1 * MIB});
      a.buffer.fill(7);
      b.buffer.fill(9);
      c.getName('never/appears', { wait: true }).catch(() => {});
      send({ unsealed: [a.id, b.id] });
      setInterval(() => {}, 1 << 30);
    `);
    const { unsealed } = (await child.next()) as { unsealed: string[] };

    await eventually(async () => (await c.status()).nameWaiters === 1, 'the child waits on a name');
    const during = await c.status();
    expect(during.connections).toBe(2);
    expect(during.memoryUsed).toBe(base.memoryUsed + 4 * MIB);
    expect(during.blobs).toBe(base.blobs + 2);
    for (const id of unsealed) expect(await errCode(c.get(id))).toBe('ERR_NOT_SEALED');

    // Deleted while the child holds it: hidden at once, freed only when the holder goes.
    await c.delete(doomed);
    expect(await errCode(c.get(doomed))).toBe('ERR_OBJECT_NOT_FOUND');
    expect((await c.status()).memoryUsed).toBe(during.memoryUsed);

    child.proc.kill('SIGKILL');
    expect((await child.exited).signal).toBe('SIGKILL');

    await eventually(async () => (await c.status()).connections === 1, 'the store drops the dead client');
    const after = await c.status();
    expect(after.memoryUsed).toBe(base.memoryUsed - 2 * MIB);
    expect(after.blobs).toBe(base.blobs - 1);
    expect(after.entries).toBe(base.entries - 2); // the doomed tensor and its blob
    expect(after.nameWaiters).toBe(0);
    for (const id of unsealed) expect(await errCode(c.get(id))).toBe('ERR_OBJECT_NOT_FOUND');

    // What survives is intact and referenced by nobody.
    const t = (await c.get(keep)) as Tensor;
    expect(bytesMismatch(t.data, pattern(2 * MIB, 1))).toBeNull();
    await c.release(keep);
    const [summary] = (await c.list()).filter((o) => o.id === keep);
    expect(summary.references).toBe(0);

    // The memory is reusable: the dead client's 6 MiB fit again.
    const again = await c.createBlob(6 * MIB);
    await again.abort();
  });
});
