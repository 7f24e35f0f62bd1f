/**
 * The put ring (docs/PROTOCOL.md "Put ring"): small unnamed puts that take
 * no round trip, seen by every later request of any client; slab memory
 * counted when leased and given back per object; malformed records (each
 * fails its client with ERR_RING_RECORD and nothing else); a client killed
 * with SIGKILL mid-stream; several writer processes against readers that
 * get and delete, checking bytes.
 */
import { connect, type Tensor } from 'trellis';
import { afterEach, describe, expect, it } from 'vitest';
import { IpcChannel } from '../dist/src/client/ipc-channel.js';
import { native } from '../dist/src/native.js';
import { decodeBody } from '../dist/src/protocol/frame.js';
import { decodeReply, encodeRequest, PROTOCOL_VERSION } from '../dist/src/protocol/messages.js';
import { R, RING_BYTES, recordBase } from '../dist/src/protocol/put-ring.js';
import { errCode, eventually, killChildren, startChild } from './helpers/child.js';
import { sample, scrape } from './helpers/metrics.js';
import { spawnStore, startStore, tempDir } from './helpers/store.js';

const MIB = 1024 * 1024;

/** A client that speaks the ring by hand, to write records no honest client would. */
async function rawRing(socket: string) {
  const ch = await IpcChannel.open(socket, 5000);
  const hello = decodeReply('hello', (await ch.request({ t: 'hello', version: PROTOCOL_VERSION })).header);
  const fdsOf = async (body: Parameters<typeof encodeRequest>[1]) => {
    const { data, fds } = await native.requestFds(socket, encodeRequest(0, body), 5000);
    return { reply: decodeReply('fds', decodeBody(data).header), fds };
  };
  const { fds } = await fdsOf({ t: 'fds', token: hello.token, segments: [], ring: true });
  const words = new Int32Array(native.map(fds[0], RING_BYTES, true));
  native.closeFd(fds[0]);
  const lease = async () => {
    const l = decodeReply('lease', (await ch.request({ t: 'lease' })).header);
    const seg = await fdsOf({ t: 'fds', token: hello.token, segments: [l.slab.seg] });
    const bytes = new Uint8Array(native.map(seg.fds[0], seg.reply.segments[0].size, true), l.slab.off, l.slab.size);
    native.closeFd(seg.fds[0]);
    return { ...l, bytes };
  };
  let seq = 1;
  /** Writes record fields (defaults: a 64-byte Blob at `off` with counter `counter`), committed unless told not to. */
  const record = (f: Partial<Record<keyof typeof R, number>>, commit = true) => {
    const b = recordBase(seq);
    for (let i = 1; i < 16; i++) words[b + i] = 0;
    const all = { KIND: 1, SIZE: 64, ...f };
    for (const [k, v] of Object.entries(all)) words[b + R[k as keyof typeof R]] = v;
    if (commit) Atomics.store(words, b + R.COMMIT, seq);
    seq++;
  };
  const idOf = (n: number) => `o${hello.instanceId.toString(16).padStart(4, '0')}${n.toString(16).padStart(12, '0')}`;
  return { ch, words, lease, record, idOf };
}

describe('put ring', () => {
  const stops: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await killChildren();
    for (const stop of stops.splice(0).reverse()) await stop();
  });
  async function store(opts: Parameters<typeof startStore>[0] = {}) {
    const env = await startStore({ size: 64 * MIB, ...opts });
    stops.push(env.stop);
    return env;
  }
  /** A client whose ring is leased: its first small put went by the socket and opened the ring. */
  async function ringClient(socket: string) {
    const c = await connect({ socket });
    stops.push(() => c.close());
    // The ring opens after 32 small puts by the socket.
    const first = await c.putBlob(new Uint8Array(1));
    for (let i = 0; i < 32; i++) await c.putBlob(new Uint8Array(1));
    await eventually(async () => {
      const before = (await c.status()).counters.ringPuts;
      await c.putBlob(new Uint8Array(1));
      return (await c.status()).counters.ringPuts > before;
    }, 'the ring is open');
    return { c, first };
  }

  it('a small put takes no request; a get by another client right after finds it (its fast get misses, the round trip drains first)', async () => {
    const env = await store();
    const { c } = await ringClient(env.socket);
    await using other = await connect({ socket: env.socket });
    expect(await other.fastPath).toBe(true);
    // Map the segment in `other` so a directory hit could be served without a request.
    const seen = (await c.list({ limit: 1 }))[0].id;
    await other.get(seen);
    await other.release(seen);
    const before = env.store.status().counters;
    // The store runs in this process: nothing of it runs between the put and the get.
    const id = await c.put(new Float32Array([1, 2, 3, 4, 5, 6]));
    const b = await c.putBlob(new Uint8Array([7, 8, 9]));
    const mid = env.store.status().counters;
    expect({ ringPuts: mid.ringPuts - before.ringPuts, objects: env.store.table.has(id) }).toEqual({
      ringPuts: 0,
      objects: false,
    });
    const t = (await other.get(id)) as Tensor;
    const after = env.store.status().counters;
    expect({ dtype: t.dtype, shape: t.shape, data: Array.from(t.data as Float32Array) }).toEqual({
      dtype: 'float32',
      shape: [6],
      data: [1, 2, 3, 4, 5, 6],
    });
    expect({
      ringPuts: after.ringPuts - before.ringPuts,
      gets: after.gets - before.gets,
      fastGets: after.fastGets - before.fastGets,
    }).toEqual({ ringPuts: 2, gets: 1, fastGets: 0 });
    await other.release(id);
    // Published once in: the next get of the blob is a fast one.
    expect(Array.from((await other.get(b)) as Uint8Array)).toEqual([7, 8, 9]);
    expect(env.store.status().counters.fastGets - after.fastGets).toBe(1);
    await other.release(b);
  });

  it('a get of what this client just put by ring asks for a drain and then takes the fast path', async () => {
    const env = await store();
    const { c } = await ringClient(env.socket);
    expect(await c.fastPath).toBe(true);
    const before = (await c.status()).counters;
    const id = await c.put(new Int32Array([4, 5, 6]));
    const t = (await c.get(id)) as Tensor;
    expect(Array.from(t.data as Int32Array)).toEqual([4, 5, 6]);
    const after = (await c.status()).counters;
    expect({
      ringPuts: after.ringPuts - before.ringPuts,
      gets: after.gets - before.gets,
      fastGets: after.fastGets - before.fastGets,
    }).toEqual({ ringPuts: 1, gets: 0, fastGets: 1 });
    await c.release(id);
  });

  it('tensors of every dtype and up to four dimensions go by ring; five dimensions, names and Arrow go by the socket', async () => {
    const env = await store();
    const { c } = await ringClient(env.socket);
    await using other = await connect({ socket: env.socket });
    const { DTYPES } = await import('../dist/src/codecs/tensor.js');
    const before = env.store.status().counters.ringPuts;
    const made: [string, string, number[], number[]][] = [];
    for (const [i, dtype] of (Object.keys(DTYPES) as (keyof typeof DTYPES)[]).entries()) {
      const shape = [[3], [2, 3], [1, 2, 3], [2, 1, 3, 1]][i % 4];
      const n = shape.reduce((a, b) => a * b, 1);
      const ctor = DTYPES[dtype] as unknown as new (n: number) => ArrayLike<number | bigint> & { [k: number]: unknown };
      const data = new ctor(n);
      for (let k = 0; k < n; k++) data[k] = typeof data[0] === 'bigint' ? BigInt(k + i) : (k + i) % 2;
      const id = await c.put({ dtype, shape, data: data as never });
      made.push([id, dtype, shape, Array.from(data as ArrayLike<number>, Number)]);
    }
    const ringPuts = (await c.status()).counters.ringPuts - before;
    const five = await c.put({ dtype: 'uint8', shape: [1, 1, 1, 1, 2], data: new Uint8Array([5, 6]) });
    const named = await c.putBlob(new Uint8Array([1]), { name: 'ring/named' });
    expect((await c.status()).counters.ringPuts - before).toBe(ringPuts);
    expect(ringPuts).toBe(made.length);
    const back = [];
    for (const [id] of made) {
      const t = (await other.get(id)) as Tensor;
      back.push([id, t.dtype, t.shape, Array.from(t.data as ArrayLike<number>, Number)]);
      await other.release(id);
    }
    expect(back).toEqual(made);
    expect(Array.from(((await other.get(five)) as Tensor).data as Uint8Array)).toEqual([5, 6]);
    expect(await other.getName('ring/named')).toBe(named);
  });

  it('a delete or list by another client right after the puts sees every object', async () => {
    const env = await store();
    const { c } = await ringClient(env.socket);
    await using other = await connect({ socket: env.socket });
    const ids: string[] = [];
    for (let i = 0; i < 300; i++) ids.push(await c.putBlob(new Uint8Array(100).fill(i & 0xff)));
    const listed = new Set((await other.list({ typename: 'Blob' })).map((o) => o.id));
    expect(ids.filter((id) => !listed.has(id))).toEqual([]);
    await other.delete(ids);
    expect(await errCode(c.get(ids[0]))).toBe('ERR_OBJECT_NOT_FOUND');
    expect(await errCode(c.get(ids[299]))).toBe('ERR_OBJECT_NOT_FOUND');
  });

  it('list pages neither skip nor repeat when several clients put by ring (leased ids arrive out of order)', async () => {
    const env = await store();
    const { c: a } = await ringClient(env.socket);
    const { c: b } = await ringClient(env.socket);
    await using plain = await connect({ socket: env.socket, putRing: false });
    // a's lease holds ids below b's, below plain's: interleaved, they arrive out of id order.
    for (let i = 0; i < 60; i++) {
      await a.putBlob(new Uint8Array([i]));
      await b.putBlob(new Uint8Array([i]));
      if (i % 10 === 0) await plain.putBlob(new Uint8Array([i]));
    }
    const all = (await plain.list({ limit: 100_000 })).map((o) => o.id);
    const paged: string[] = [];
    for (let p = await plain.listPage({ limit: 7 }); ; p = await plain.listPage({ limit: 7, cursor: p.next })) {
      paged.push(...p.objects.map((o) => o.id));
      if (p.next === undefined) break;
    }
    expect(paged).toEqual(all);
    expect(all).toEqual([...all].sort());
    expect(new Set(all).size).toBe(env.store.status().blobs);
  });

  it('the store metrics count puts that arrive by ring', async () => {
    const { freePort } = await import('trellis/jobs');
    const port = await freePort();
    const s = await spawnStore(['--size', '64M', '--metrics-port', String(port)]);
    stops.push(s.stop);
    const { c } = await ringClient(s.socket);
    const labels = { transport: 'ipc', kind: 'Blob' };
    const before = sample(await scrape(s.ready.metrics as string), 'trellis_store_puts_total', labels) ?? 0;
    const ringBefore = (await c.status()).counters.ringPuts;
    for (let i = 0; i < 50; i++) await c.putBlob(new Uint8Array(1000));
    // The scrape is no store request: it takes the ring in itself.
    const text = await scrape(s.ready.metrics as string);
    expect({
      puts: (sample(text, 'trellis_store_puts_total', labels) ?? 0) - before,
      ring: (await c.status()).counters.ringPuts - ringBefore,
    }).toEqual({ puts: 50, ring: 50 });
  });

  it('a slab is leased apart from object memory; each object gives its bytes back, the lease its tail', async () => {
    const env = await store({ size: 16 * MIB, punchDelayMs: 0 });
    const { c } = await ringClient(env.socket);
    const open = await c.status();
    // What the objects made so far hold (the lease's unused part is counted apart, in ringLeased).
    const base = open.memoryUsed;
    expect(open.counters.ringLeased).toBeGreaterThan(0);
    const slab = env.store.rings.slabBytes;
    const ids: string[] = [];
    // Three slabs' worth: the quota is one slab at a time, each new lease gives the last one's tail back.
    for (let i = 0; i < (3 * slab) / 1024; i++) ids.push(await c.putBlob(new Uint8Array(1000).fill(i & 0xff)));
    const st = await c.status();
    const objectBytes = ids.length * 1024;
    expect(st.memoryUsed - base).toBe(objectBytes);
    expect(st.counters.ringLeased).toBeLessThanOrEqual(slab);
    // A long-lived object keeps only its own bytes: delete every other one.
    await c.delete(ids.filter((_, i) => i % 2 === 1));
    const half = await c.status();
    expect(half.memoryUsed - base).toBe(objectBytes - Math.floor(ids.length / 2) * 1024);
    expect(Array.from(((await c.get(ids[10])) as Uint8Array).subarray(0, 3))).toEqual([10, 10, 10]);
    await c.release(ids[10]);
    await c.close();
    await eventually(() => env.store.status().connections === 0, 'the store sees the client gone');
    const closed = env.store.status();
    expect({ leased: closed.counters.ringLeased, used: closed.memoryUsed - base }).toEqual({
      leased: 0,
      used: objectBytes - Math.floor(ids.length / 2) * 1024,
    });
  });

  it('a client cannot lease past its quota: one slab at a time, counted against the limit; a lease that does not fit is ERR_OUT_OF_MEMORY and puts go by the socket', async () => {
    const env = await store({ size: 1 * MIB });
    const slab = env.store.rings.slabBytes;
    await using c = await connect({ socket: env.socket });
    const raw = await rawRing(env.socket);
    // A second lease replaces the first: one slab at a time.
    await raw.lease();
    await raw.lease();
    expect((await c.status()).counters.ringLeased).toBe(slab);
    // The lease counts against the limit: a blob that needs its bytes does not fit...
    expect(await errCode(c.putBlob(new Uint8Array(MIB - slab / 2)))).toBe('ERR_OUT_OF_MEMORY');
    raw.ch.close();
    await eventually(async () => (await c.status()).counters.ringLeased === 0, 'the lease goes back with its client');
    // ...and fits once the lease went back. Now less than a slab is free.
    const filler = await c.putBlob(new Uint8Array(MIB - slab / 2));
    const raw2 = await rawRing(env.socket);
    stops.push(async () => raw2.ch.close());
    expect(await errCode(raw2.lease())).toBe('ERR_OUT_OF_MEMORY');
    // The honest client's ring cannot open either (it tries after 32 small puts); its puts still work, by the socket.
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await c.putBlob(new Uint8Array([i])));
    await c.status(); // the lease was refused by now: the fd exchange and the lease went before it
    for (let i = 0; i < 10; i++) ids.push(await c.putBlob(new Uint8Array([40 + i])));
    const back: number[] = [];
    for (const id of ids) {
      back.push(((await c.get(id)) as Uint8Array)[0]);
      await c.release(id);
    }
    expect(back).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect((await c.status()).counters.ringPuts).toBe(0);
    await c.delete(filler);
  });

  it('spill and restore work on objects that live in a slab', async () => {
    const { dir: spillDir, cleanup } = tempDir('trellis-ring-spill-');
    stops.push(async () => cleanup());
    const env = await store({ size: 2 * MIB, spillDir });
    const { c } = await ringClient(env.socket);
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await c.putBlob(new Uint8Array(60 * 1024).fill(i)));
    for (let i = 0; i < 40; i++) ids.push(await c.putBlob(new Uint8Array(60 * 1024).fill(40 + i)));
    const st = await c.status();
    expect(st.counters.spills).toBeGreaterThan(0);
    expect(st.counters.ringPuts).toBeGreaterThan(60);
    for (const [i, id] of ids.entries()) {
      const v = (await c.get(id)) as Uint8Array;
      expect([v.length, v[0], v[60 * 1024 - 1]]).toEqual([60 * 1024, i, i]);
      await c.release(id);
    }
    expect((await c.status()).counters.restores).toBeGreaterThan(0);
  });

  describe('malformed records fail their client with ERR_RING_RECORD and keep the records before', () => {
    const cases: [string, (l: { first: number; lease: number; slab: { size: number } }) => Record<string, number>][] = [
      ['not at the cursor', (l) => ({ LEASE: l.lease, OFF: 128, COUNTER_LO: l.first + 1 })],
      ['past the end of the slab', (l) => ({ LEASE: l.lease, OFF: 64, SIZE: l.slab.size, COUNTER_LO: l.first + 1 })],
      ['larger than a ring object', (l) => ({ LEASE: l.lease, OFF: 64, SIZE: 64 * 1024 + 1, COUNTER_LO: l.first + 1 })],
      ['an id outside the lease', (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 5000 })],
      ['an id used again', (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first })],
      ['another lease', (l) => ({ LEASE: l.lease + 7, OFF: 64, COUNTER_LO: l.first + 1 })],
      ['an unknown kind', (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1, KIND: 9 })],
      [
        'an unknown dtype',
        (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1, KIND: 2, DTYPE: 12, NDIM: 1, DIMS: 64 }),
      ],
      [
        'a tensor whose shape is not its size',
        (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1, KIND: 2, DTYPE: 10, NDIM: 1, DIMS: 17 }),
      ],
      [
        'more than four dimensions',
        (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1, KIND: 2, DTYPE: 5, NDIM: 5, DIMS: 64 }),
      ],
      [
        'a negative dimension',
        (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1, KIND: 2, DTYPE: 5, NDIM: 1, DIMS: -64 }),
      ],
      ['a Blob with a shape', (l) => ({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1, NDIM: 1 })],
    ];
    for (const [what, fields] of cases) {
      it(what, async () => {
        const env = await store({ punchDelayMs: 0 });
        await using bystander = await connect({ socket: env.socket });
        const base = await bystander.status();
        const raw = await rawRing(env.socket);
        const l = await raw.lease();
        // A good record first: it must survive the bad one.
        l.bytes.fill(0x42, 0, 64);
        raw.record({ LEASE: l.lease, OFF: 0, COUNTER_LO: l.first });
        raw.record(fields(l));
        expect(await errCode(raw.ch.request({ t: 'status' }))).toBe('ERR_RING_RECORD');
        expect(raw.ch.error?.code).toBe('ERR_RING_RECORD');
        // The store lives on, the good record is an object, the lease's tail went back.
        const good = raw.idOf(l.first);
        expect(Array.from(((await bystander.get(good)) as Uint8Array).subarray(0, 4))).toEqual([
          0x42, 0x42, 0x42, 0x42,
        ]);
        await bystander.release(good);
        await eventually(async () => (await bystander.status()).connections === 1, 'the store drops the bad client');
        const after = await bystander.status();
        expect({ blobs: after.blobs - base.blobs, used: after.memoryUsed - base.memoryUsed }).toEqual({
          blobs: 1,
          used: 64,
        });
      });
    }
  });

  it("a session's slabs start at 64 KiB and double with each lease up to 1 MiB", async () => {
    const env = await store();
    const raw = await rawRing(env.socket);
    stops.push(async () => raw.ch.close());
    const sizes: number[] = [];
    for (let i = 0; i < 6; i++) sizes.push((await raw.lease()).slab.size);
    const KIB = 1024;
    expect(sizes).toEqual([64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB, MIB]);
  });

  it('a lease needs a ring first, and the ring needs the session token', async () => {
    const env = await store();
    const ch = await IpcChannel.open(env.socket, 5000);
    stops.push(async () => ch.close());
    const hello = decodeReply('hello', (await ch.request({ t: 'hello', version: PROTOCOL_VERSION })).header);
    expect(await errCode(ch.request({ t: 'lease' }))).toBe('ERR_BAD_REQUEST');
    const wrong = native.requestFds(
      env.socket,
      encodeRequest(0, { t: 'fds', token: 'f'.repeat(32), segments: [], ring: true }),
      5000,
    );
    const { data } = await wrong;
    expect(decodeBody(data).header).toMatchObject({ t: 'err', code: 'ERR_UNAUTHORIZED' });
    expect(hello.token.length).toBe(32);
  });

  it('a store started with putRing false offers none: puts go by the socket', async () => {
    const env = await store({ putRing: false });
    await using c = await connect({ socket: env.socket });
    for (let i = 0; i < 40; i++) await c.putBlob(new Uint8Array([i]));
    await c.status();
    const id = await c.putBlob(new Uint8Array([99]));
    expect(Array.from((await c.get(id)) as Uint8Array)).toEqual([99]);
    expect((await c.status()).counters).toMatchObject({ ringPuts: 0, ringLeased: 0 });
  });

  it('the ring element sizes follow the tensor codec', async () => {
    const { DTYPES } = await import('../dist/src/codecs/tensor.js');
    const { DTYPE_CODES } = await import('../dist/src/protocol/fast-directory.js');
    const { DTYPE_BYTES } = await import('../dist/src/protocol/put-ring.js');
    expect(DTYPE_CODES.map((d: keyof typeof DTYPES) => DTYPES[d].BYTES_PER_ELEMENT)).toEqual([...DTYPE_BYTES]);
  });

  it('a reserved word that is not zero is a bad record too', async () => {
    const env = await store();
    const raw = await rawRing(env.socket);
    const l = await raw.lease();
    raw.record({ LEASE: l.lease, OFF: 0, COUNTER_LO: l.first });
    raw.words[recordBase(1) + 15] = 1;
    expect(await errCode(raw.ch.request({ t: 'status' }))).toBe('ERR_RING_RECORD');
  });

  it('a record without its commit word is dropped when its client goes, and its bytes go back', async () => {
    const env = await store({ punchDelayMs: 0 });
    await using bystander = await connect({ socket: env.socket });
    const base = await bystander.status();
    const raw = await rawRing(env.socket);
    const l = await raw.lease();
    raw.record({ LEASE: l.lease, OFF: 0, COUNTER_LO: l.first });
    raw.record({ LEASE: l.lease, OFF: 64, COUNTER_LO: l.first + 1 }, false);
    raw.ch.close();
    await eventually(async () => (await bystander.status()).connections === 1, 'the store drops the client');
    const after = await bystander.status();
    expect({
      blobs: after.blobs - base.blobs,
      used: after.memoryUsed - base.memoryUsed,
      leased: after.counters.ringLeased,
      half: env.store.table.has(raw.idOf(l.first + 1)),
    }).toEqual({ blobs: 1, used: 64, leased: 0, half: false });
  });

  it('kill -9 mid-stream: every put the client completed survives with its bytes, its lease goes back', async () => {
    const env = await store({ size: 64 * MIB, punchDelayMs: 0 });
    const child = startChild(`
      const c = await connect({ socket: ${JSON.stringify(env.socket)} });
      let batch = [];
      for (let k = 0; ; k++) {
        const b = new Uint8Array(700);
        new DataView(b.buffer).setUint32(0, k);
        for (let i = 4; i < b.length; i++) b[i] = (k * 7 + i) & 0xff;
        batch.push(await c.putBlob(b));
        if (batch.length === 200) { send({ ids: batch }); batch = []; await new Promise((r) => setImmediate(r)); }
      }
    `);
    const reported: string[] = [];
    while (reported.length < 2000) reported.push(...((await child.next(30_000)).ids as string[]));
    child.proc.kill('SIGKILL');
    await child.exited;
    await using c = await connect({ socket: env.socket, putRing: false });
    await eventually(async () => (await c.status()).connections === 1, 'the store drops the dead client');
    const objects = await c.list({ typename: 'Blob' });
    const listed = new Set(objects.map((o) => o.id));
    expect(reported.filter((id) => !listed.has(id))).toEqual([]);
    let bad = 0;
    const ks = new Set<number>();
    for (const o of objects) {
      const v = (await c.get(o.id)) as Uint8Array;
      const k = new DataView(v.buffer, v.byteOffset).getUint32(0);
      ks.add(k);
      for (let i = 4; i < v.length; i++) if (v[i] !== ((k * 7 + i) & 0xff)) bad++;
      await c.release(o.id);
    }
    const st = await c.status();
    expect({ bad, distinct: ks.size, leased: st.counters.ringLeased, used: st.memoryUsed }).toEqual({
      bad: 0,
      distinct: objects.length,
      leased: 0,
      used: objects.length * 704,
    });
    // Ring puts went in order: the survivors are puts 0 .. n-1, none missing.
    expect(Math.max(...ks)).toBe(objects.length - 1);
  });

  it('several processes putting by ring while others get and delete: every byte read is the one written (stress)', async () => {
    const env = await store({ size: 128 * MIB, punchDelayMs: 0 });
    const writers = Array.from({ length: 3 }, (_, w) =>
      startChild(`
        const c = await connect({ socket: ${JSON.stringify(env.socket)} });
        let stop = false;
        command().then(() => { stop = true; });
        send({ ready: true });
        let puts = 0, oom = 0;
        for (let k = 0; !stop; k++) {
          const n = 64 + ((k * 37) % 900);
          const b = new Uint8Array(n);
          const dv = new DataView(b.buffer);
          dv.setUint32(0, ${w}); dv.setUint32(4, k); dv.setUint32(8, n);
          for (let i = 12; i < n; i++) b[i] = (${w} * 31 + k * 7 + i) & 0xff;
          try { await c.putBlob(b); puts++; } catch (e) { if (e.code !== 'ERR_OUT_OF_MEMORY') throw e; oom++; }
          // Paced, so the readers (which delete what they read) keep up.
          if (k % 64 === 0) await new Promise((r) => setTimeout(r, 1));
        }
        send({ puts, oom });
      `),
    );
    const readers = Array.from({ length: 2 }, () =>
      startChild(`
        const c = await connect({ socket: ${JSON.stringify(env.socket)} });
        await c.fastPath;
        let stop = false;
        command().then(() => { stop = true; });
        send({ ready: true });
        let ok = 0, bad = 0, missing = 0, deleted = 0;
        while (!stop) {
          const ids = (await c.list({ typename: 'Blob', limit: 500 })).map((o) => o.id);
          for (const [j, id] of ids.entries()) {
            let v;
            try { v = await c.get(id); } catch (e) { missing++; continue; }
            const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
            const w = dv.getUint32(0), k = dv.getUint32(4), n = dv.getUint32(8);
            let good = n === v.length;
            for (let i = 12; good && i < n; i++) if (v[i] !== ((w * 31 + k * 7 + i) & 0xff)) good = false;
            if (good) ok++; else bad++;
            await c.release(id);
            // Most are deleted at once; every fourth lives on a while (the next pass reads it again).
            if (j % 4 !== 0) { try { await c.delete(id); deleted++; } catch (e) { missing++; } }
          }
        }
        send({ ok, bad, missing, deleted });
      `),
    );
    for (const p of [...writers, ...readers]) expect(await p.next(30_000)).toEqual({ ready: true });
    await new Promise((r) => setTimeout(r, 3000));
    for (const w of writers) w.tell('stop');
    const wr = [];
    for (const w of writers) wr.push((await w.next(30_000)) as { puts: number });
    for (const r of readers) r.tell('stop');
    const rr = [];
    for (const r of readers) rr.push((await r.next(30_000)) as { ok: number; bad: number; deleted: number });
    expect(rr.map((r) => r.bad)).toEqual([0, 0]);
    for (const r of rr) expect(r.ok).toBeGreaterThan(100);
    for (const r of rr) expect(r.deleted).toBeGreaterThan(20);
    for (const w of wr) expect(w.puts).toBeGreaterThan(500);
    // Nearly all of them by ring (each writer's first ones went by the socket while its ring opened).
    const puts = wr.reduce((n, w) => n + w.puts, 0);
    expect(env.store.status().counters.ringPuts).toBeGreaterThan(puts * 0.9);
    // Once the writers are gone and everything is deleted, no byte of memory is left.
    await killChildren();
    await using c = await connect({ socket: env.socket, putRing: false });
    await eventually(async () => (await c.status()).connections === 1, 'the store drops the children');
    for (let page = await c.list({ limit: 50_000 }); page.length > 0; page = await c.list({ limit: 50_000 })) {
      await c.delete(page.map((o) => o.id));
    }
    const st = await c.status();
    expect({
      used: st.memoryUsed,
      leased: st.counters.ringLeased,
      blobs: st.blobs,
      arena: env.store.arena.memoryUsed,
    }).toEqual({
      used: 0,
      leased: 0,
      blobs: 0,
      arena: 0,
    });
  }, 90_000);
});
