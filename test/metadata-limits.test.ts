/**
 * Object metadata is bounded and counted (issue 8, defect 2): one object's
 * metadata is at most MAX_META_BYTES (ERR_BAD_REQUEST), all records together
 * at most maxRecordBytes (ERR_OUT_OF_MEMORY, shown in status), and list
 * answers in pages of bounded size that a client follows to the end.
 */
import { connect, type StoreClient } from 'trellis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_META_BYTES } from '../dist/src/protocol/fields.js';
import { errCode } from './helpers/child.js';
import { type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';

const MIB = 1024 * 1024;
const LIMIT = 8 * MIB;

describe.each(['ipc', 'rpc'] as const)('metadata limits over %s', (transport) => {
  let s: RpcStore;
  beforeAll(async () => {
    s = await startRpcStore('127.0.0.1', { size: 64 * MIB, maxRecordBytes: LIMIT });
  });
  afterAll(async () => {
    await s?.stop();
  });
  const open = (): Promise<StoreClient> =>
    transport === 'ipc' ? connect({ socket: s.socket }) : connect({ rpc: s.rpc, token: TOKEN });

  it('metadata beyond the per-object cap (15 MiB) is refused, nothing created', async () => {
    await using c = await open();
    const blob = await c.putBlob(new Uint8Array([1]));
    const before = await c.status();
    const huge = { pad: 'x'.repeat(15 * MIB) };
    expect(await errCode(c.putObject({ typename: 'Big', meta: huge, members: [blob] }))).toBe('ERR_BAD_REQUEST');
    const justOver = { pad: 'x'.repeat(MAX_META_BYTES) };
    expect(await errCode(c.putObject({ typename: 'Big', meta: justOver, members: [blob] }))).toBe('ERR_BAD_REQUEST');
    const after = await c.status();
    expect({ entries: after.entries, records: after.records }).toEqual({
      entries: before.entries,
      records: before.records,
    });
    await c.delete(blob);
  });

  it('records below the cap count against maxRecordBytes; past it ERR_OUT_OF_MEMORY, and the store stays up', async () => {
    await using c = await open();
    const base = (await c.status()).records;
    expect(base.limit).toBe(LIMIT);
    const blob = await c.putBlob(new Uint8Array([2]));
    const meta = { pad: 'y'.repeat(1_000_000) };
    const made: string[] = [];
    let refused = 'no error';
    for (let i = 0; i < 20 && refused === 'no error'; i++) {
      try {
        made.push(await c.putObject({ typename: 'Meta', meta, members: [blob] }));
      } catch (e) {
        refused = (e as { code?: string }).code ?? String(e);
      }
    }
    expect({ made: made.length, refused }).toEqual({ made: 8, refused: 'ERR_OUT_OF_MEMORY' });
    const full = (await c.status()).records;
    expect(full.bytes).toBeLessThanOrEqual(LIMIT);
    expect(full.bytes).toBeGreaterThan(8_000_000);
    // Listing them still works, in pages.
    expect((await c.list({ typename: 'Meta' })).map((o) => o.id)).toEqual(made);
    await c.delete(made, { deep: false });
    await c.delete(blob);
    expect((await c.status()).records).toEqual(base);
  });

  it('list pages through everything, each page bounded', async () => {
    await using c = await open();
    const blob = await c.putBlob(new Uint8Array([3]));
    const made: string[] = [];
    // 0.6 MiB each: six fit one page's 4 MiB budget, seven do not.
    for (let i = 0; i < 7; i++) {
      made.push(await c.putObject({ typename: 'Paged', meta: { i, pad: 'z'.repeat(600 * 1024) }, members: [blob] }));
    }
    const small = await Promise.all(
      Array.from({ length: 20 }, (_, i) => c.putObject({ typename: 'Paged', meta: { i }, members: [blob] })),
    );
    made.push(...small);
    const pages: number[] = [];
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const p = await c.listPage({ typename: 'Paged', limit: 8, cursor });
      pages.push(p.objects.length);
      seen.push(...p.objects.map((o) => o.id));
      cursor = p.next;
    } while (cursor !== undefined);
    expect(seen).toEqual(made);
    expect(pages).toEqual([6, 8, 8, 5]);
    expect((await c.list({ typename: 'Paged' })).map((o) => o.id)).toEqual(made);
    expect((await c.list({ typename: 'Paged', limit: 7 })).map((o) => o.id)).toEqual(made.slice(0, 7));
    await c.delete(made, { deep: false });
    await c.delete(blob);
  });
});
