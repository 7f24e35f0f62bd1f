/**
 * StoreCollective across real processes: three stores on 127.0.0.1/2/3 with
 * RPC and one real etcd, and one rank per store in a child process of its
 * own. Gradients go through the stores only (arena blobs, RPC reads); the
 * tests check the exact rank-order float sum on every rank, broadcast, that
 * objects are freed step by step, and what a rank killed with kill -9 does to
 * the others and to the stores.
 */
import { createHash, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type TrellisClient } from 'trellis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
// @ts-expect-error a plain ES module shared with the rank processes
import { gradients } from './fixtures/collective-data.mjs';
import { type ChildHandle, eventually, killChildren, startChild } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { clusterStoreArgs, DIST, spawnStore, tempDir } from './helpers/store.js';

type Store = Awaited<ReturnType<typeof spawnStore>>;
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const COLLECTIVE = DIST.replace(/index\.js$/, 'collective/index.js');
const DATA = new URL('./fixtures/collective-data.mjs', import.meta.url).pathname;
/** The MLP's gradient size (784·256 + 256 + 256·10 + 10 ... as issue 10 counts it). */
const MLP = 235_146;

/** The sum in the order given, each partial sum rounded to float32. */
function sumInOrder(parts: Float32Array[]): Float32Array {
  const out = Float32Array.from(parts[0]);
  for (const p of parts.slice(1)) for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i] + p[i]);
  return out;
}

const sha = (a: Float32Array) =>
  createHash('sha256')
    .update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
    .digest('hex');

/**
 * A rank process: connects to its store, opens the group, then runs one
 * command per stdin line ({op, step, ...}) and prints one JSON line each.
 */
const RANK = `
const { StoreCollective } = await import(${JSON.stringify(COLLECTIVE)});
const { createHash } = await import('node:crypto');
const { gradients } = await import(${JSON.stringify(DATA)});
const spec = JSON.parse(process.env.SPEC);
const opts = JSON.parse(process.env.OPTS);
const sha = (a) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
const client = await connect({ socket: process.env.SOCKET });
const ac = new AbortController();
let c;
try {
  c = await StoreCollective.open(client, spec, { ...opts, signal: ac.signal });
  send({ ready: true });
} catch (e) {
  send({ openFailed: e.code ?? String(e) });
}
for (;;) {
  const cmd = JSON.parse(await command());
  try {
    if (cmd.op === 'allReduce') {
      const g = gradients(spec.size, spec.rank, cmd.step);
      const t = await c.allReduce(cmd.step, g);
      send({ sha: sha(g), bytesMoved: t.bytesMoved, bytesLocal: t.bytesLocal });
    } else if (cmd.op === 'steps') {
      const g = new Float32Array(spec.size);
      for (let s = cmd.from; s < cmd.from + cmd.count; s++) {
        g.fill(spec.rank + 1);
        await c.allReduce(s, g);
      }
      send({ done: true, first: g[0] });
    } else if (cmd.op === 'broadcast') {
      const g = spec.rank === cmd.root ? gradients(spec.size, 99, cmd.step) : new Float32Array(spec.size);
      await c.broadcast(cmd.step, g, cmd.root);
      send({ sha: sha(g) });
    } else if (cmd.op === 'abortSoon') {
      const g = new Float32Array(spec.size);
      const p = c.allReduce(cmd.step, g);
      setTimeout(() => ac.abort(), 100);
      send({ code: await errCode(p), next: await errCode(c.allReduce(cmd.step + 1, g)) });
    } else if (cmd.op === 'close') {
      await c.close();
      await c.close();
      send({ closed: true, after: await errCode(c.allReduce(cmd.step, new Float32Array(spec.size))) });
    }
  } catch (e) {
    send({ code: e.code ?? String(e), message: e.message });
  }
}
`;

describe('StoreCollective over three stores and etcd', () => {
  let etcd: EtcdHandle;
  let tokenDir: ReturnType<typeof tempDir>;
  let token = '';
  let stores: Store[] = [];
  let clients: TrellisClient[] = [];
  let instances: string[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    tokenDir = tempDir();
    token = `${randomUUID()}${randomUUID()}`;
    writeFileSync(join(tokenDir.dir, 'token'), token, { mode: 0o600 });
    const prefix = `/trellis-test/${randomUUID()}`;
    stores = await Promise.all(
      HOSTS.map((host, i) =>
        spawnStore(
          clusterStoreArgs({
            name: `node${i}`,
            size: '256M',
            etcdUrl: etcd.url,
            metaPrefix: prefix,
            host,
            tokenFile: join(tokenDir.dir, 'token'),
          }),
        ),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.socket })));
    instances = clients.map((c) => String(c.instanceId));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(stores.map((s) => s.stop()));
    await etcd?.stop();
    tokenDir?.cleanup();
  });
  let baseline: number[] = [];
  beforeEach(async () => {
    baseline = await Promise.all(clients.map(async (c) => (await c.status()).entries));
  });
  afterEach(killChildren);

  const objectsNow = () => Promise.all(clients.map(async (c) => (await c.status()).entries));
  const tagsNow = () => Promise.all(clients.map(async (c) => (await c.status()).tags));

  /** Starts one rank process per store (the first `ranks` stores) and waits until each has opened. */
  async function group(ranks: number, size: number, opts: Record<string, unknown> = {}): Promise<ChildHandle[]> {
    const spec = {
      group: `test/${randomUUID()}`,
      ranks,
      size,
      members: Array.from({ length: ranks }, (_, r) => ({ rank: r, instance: instances[r] })),
    };
    const kids = Array.from({ length: ranks }, (_, r) =>
      startChild(RANK, {
        SPEC: JSON.stringify({ ...spec, rank: r }),
        OPTS: JSON.stringify(opts),
        SOCKET: stores[r].socket,
        TRELLIS_TOKEN: token,
      }),
    );
    expect(await Promise.all(kids.map((k) => k.next()))).toEqual(kids.map(() => ({ ready: true })));
    return kids;
  }

  const all = (kids: ChildHandle[], cmd: Record<string, unknown>) => {
    for (const k of kids) k.tell(JSON.stringify(cmd));
    return Promise.all(kids.map((k) => k.next(60_000)));
  };

  for (const [ranks, algorithm] of [
    [3, 'reduce-scatter'],
    [2, 'reduce-scatter'],
    [3, 'reduce'],
    [2, 'reduce'],
  ] as const) {
    it(`allReduce over ${ranks} ranks (${algorithm}) is the exact rank-order float sum, bit-identical on every rank`, async () => {
      const kids = await group(ranks, MLP, { algorithm });
      for (const step of [5, 6]) {
        const parts = Array.from({ length: ranks }, (_, r) => gradients(MLP, r, step));
        const want = sha(sumInOrder(parts));
        // The data is such that another order gives other bits (with 3 terms; 2 commute): the check below can fail.
        if (ranks > 2) expect(sha(sumInOrder([...parts].reverse()))).not.toBe(want);
        const got = await all(kids, { op: 'allReduce', step });
        expect(got.map((g) => g.sha ?? g)).toEqual(kids.map(() => want));
      }
      await all(kids, { op: 'close', step: 7 });
      expect(await objectsNow()).toEqual(baseline);
    });
  }

  it('broadcast copies the root rank’s buffer to every rank', async () => {
    const kids = await group(3, MLP);
    const want = sha(gradients(MLP, 99, 0));
    const got = await all(kids, { op: 'broadcast', step: 0, root: 1 });
    expect(got).toEqual([{ sha: want }, { sha: want }, { sha: want }]);
    // allReduce follows broadcast in the same count of steps.
    const parts = Array.from({ length: 3 }, (_, r) => gradients(MLP, r, 1));
    const sums = await all(kids, { op: 'allReduce', step: 1 });
    expect(sums.map((s) => s.sha)).toEqual(kids.map(() => sha(sumInOrder(parts))));
    const closed = await all(kids, { op: 'close', step: 2 });
    expect(closed).toEqual(kids.map(() => ({ closed: true, after: 'ERR_CLOSED' })));
    expect(await objectsNow()).toEqual(baseline);
    expect(await tagsNow()).toEqual([0, 0, 0]);
  });

  it('1000 steps free their objects as they go: what is left is the fixed set of a rank, then nothing', async () => {
    const kids = await group(3, 4096);
    const done = await all(kids, { op: 'steps', from: 0, count: 1000 });
    // 1 + 2 + 3 on every element.
    expect(done).toEqual(kids.map(() => ({ done: true, first: 6 })));
    // Every step's objects were deleted by their last read: rank 0 keeps its scratch blob and the
    // blob allocated ahead for the next step, the others that one blob; nothing grew over 1000 steps.
    const settled = [baseline[0] + 2, baseline[1] + 1, baseline[2] + 1];
    await eventually(async () => JSON.stringify(await objectsNow()) === JSON.stringify(settled), 'the last reads');
    expect(await objectsNow()).toEqual(settled);
    expect(await tagsNow()).toEqual([0, 0, 0]);
    await all(kids, { op: 'close', step: 1000 });
    expect(await objectsNow()).toEqual(baseline);
  });

  it('a rank killed with kill -9 mid-step fails the others with ERR_COLLECTIVE_ABORTED; the stores keep nothing', async () => {
    // A long timeout: the survivors learn from the dead rank's store (its scope ended), not from a timer.
    const kids = await group(3, MLP, { timeoutMs: 120_000 });
    const parts = Array.from({ length: 3 }, (_, r) => gradients(MLP, r, 0));
    expect((await all(kids, { op: 'allReduce', step: 0 })).map((g) => g.sha)).toEqual(
      kids.map(() => sha(sumInOrder(parts))),
    );
    // Ranks 0 and 1 enter step 1 and publish; rank 2 dies before it does.
    const survivors = kids.slice(0, 2);
    for (const k of survivors) k.tell(JSON.stringify({ op: 'allReduce', step: 1 }));
    kids[2].proc.kill('SIGKILL');
    await kids[2].exited;
    const failed = await Promise.all(survivors.map((k) => k.next(30_000)));
    expect(failed.map((f) => f.code)).toEqual(['ERR_COLLECTIVE_ABORTED', 'ERR_COLLECTIVE_ABORTED']);
    const closed = await all(survivors, { op: 'close', step: 2 });
    expect(closed).toEqual(survivors.map(() => ({ closed: true, after: 'ERR_CLOSED' })));
    expect(await objectsNow()).toEqual(baseline);
    expect(await tagsNow()).toEqual([0, 0, 0]);
  });

  it('a rank killed before its first write fails the others at once: its store ends the scope it claimed at open', async () => {
    // A long timeout: the survivors learn from the dead rank's store, not from a timer.
    const kids = await group(3, MLP, { timeoutMs: 120_000 });
    kids[2].proc.kill('SIGKILL');
    await kids[2].exited;
    const survivors = kids.slice(0, 2);
    for (const k of survivors) k.tell(JSON.stringify({ op: 'allReduce', step: 0 }));
    const failed = await Promise.all(survivors.map((k) => k.next(30_000)));
    // Rank 0 finds rank 2's scope over at rank 2's store; rank 1 then finds rank 0's over (rank 0 ended it).
    expect(
      failed.map((f) => [
        f.code,
        /^group test\/[^:]+: allReduce step 0 failed: tag scope "test\/[^"]+\/(\d)" is over/.exec(
          String(f.message),
        )?.[1],
      ]),
    ).toEqual([
      ['ERR_COLLECTIVE_ABORTED', '2'],
      ['ERR_COLLECTIVE_ABORTED', '0'],
    ]);
    await all(survivors, { op: 'close', step: 1 });
    expect(await objectsNow()).toEqual(baseline);
    expect(await tagsNow()).toEqual([0, 0, 0]);
  });

  it('a rank that never joins a step fails the others with ERR_COLLECTIVE_ABORTED at their timeout', async () => {
    const kids = await group(2, 1024, { timeoutMs: 300 });
    kids[0].tell(JSON.stringify({ op: 'allReduce', step: 0 }));
    expect(await kids[0].next()).toEqual(expect.objectContaining({ code: 'ERR_COLLECTIVE_ABORTED' }));
    await all(kids, { op: 'close', step: 1 });
    expect(await objectsNow()).toEqual(baseline);
  });

  it('an AbortSignal aborts a pending step and breaks the group', async () => {
    const kids = await group(2, 1024);
    // Rank 1 never joins step 3: rank 0 waits until its signal aborts.
    kids[0].tell(JSON.stringify({ op: 'abortSoon', step: 3 }));
    expect(await kids[0].next()).toEqual({ code: 'ERR_COLLECTIVE_ABORTED', next: 'ERR_COLLECTIVE_ABORTED' });
    await all(kids, { op: 'close', step: 4 });
    expect(await objectsNow()).toEqual(baseline);
  });
});
