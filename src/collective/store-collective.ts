/**
 * Collectives through the stores: the ranks of a data-parallel job sum their
 * gradients (allReduce) and share parameters (broadcast) by writing them into
 * their own node's arena and reading each other's over RPC. No byte of a
 * gradient goes through Redis, etcd or JSON.
 *
 * One step of allReduce (reduce-scatter, then all-gather; rank r owns chunk r):
 *   1. r parks its reads at every peer's store first: chunk r of the peer's
 *      gradients, then the peer's reduced chunk. A read with `wait` sits in
 *      the peer store until the tag it names is bound, so the answer leaves
 *      the moment the peer seals: control costs no round trip of its own.
 *   2. r writes its gradients into a blob of its arena and seals it under a
 *      tag that allows N-1 reads (the store deletes it after the last one).
 *   3. The peers' chunks land straight in a scratch blob of r's arena; r sums
 *      chunk r in rank order, ((g0 + g1) + g2) ..., into a new blob, seals it
 *      (N-1 reads) and copies it into the caller's buffer.
 *   4. The peers' reduced chunks land straight in the caller's buffer.
 * Every chunk is summed once, by its owner, in one order, so every rank ends
 * with the same bits. The 'reduce' algorithm (rank 0 sums everything, the
 * others read the sum) is kept for measurement (bench/gradient-exchange.js).
 *
 * Failure. A step that cannot finish within timeoutMs, whose peer store drops
 * the connection, or whose signal aborts, fails with ERR_COLLECTIVE_ABORTED
 * (the cause is the underlying error); the group is broken then and every
 * later call fails the same way. The peer connections are closed at once, so
 * no parked read can land in the caller's buffer after the step failed.
 * close() deletes what this rank published; a rank that dies has its objects
 * deleted by its store (tags belong to the connection that bound them).
 *
 * @example
 *   const c = await StoreCollective.open(client, { group: 'job7/0', rank, ranks: 3, size: g.length, members });
 *   await c.broadcast(0, params);
 *   for (let step = 1; ; step++) { computeGradients(g); await c.allReduce(step, g); apply(g); }
 *   await c.close();
 */
import type { TrellisClient } from '../client/client.js';
import { RemoteClient } from '../client/remote-client.js';
import { invalidParameter, TrellisError } from '../errors.js';
import type { InstanceInfo } from '../protocol/records.js';
import { checkGroupSpec, chunkOf, type GroupSpec, type Piece, tagOf } from './group-spec.js';

export type { GroupMember, GroupSpec } from './group-spec.js';

export type Algorithm = 'reduce-scatter' | 'reduce';

export interface CollectiveOptions {
  /** A step that does not finish in this long fails the group (default 60 s). */
  timeoutMs?: number;
  /** Aborts the pending step and breaks the group. */
  signal?: AbortSignal;
  /** The shared RPC token (default $TRELLIS_TOKEN). */
  token?: string;
  /**
   * 'reduce-scatter' (default): reduce-scatter + all-gather, each rank owns 1/N of
   * the buffer. 'reduce': rank 0 sums everything and the others read the sum.
   * Every rank of a group must use the same one.
   */
  algorithm?: Algorithm;
}

/** Where one call's time went, and its bytes. */
export interface ExchangeTiming {
  /** Allocating, filling and sealing this rank's blobs in its arena. */
  writeMs: number;
  /** Waiting for peers: from this rank's publish to the first byte of each phase. */
  waitMs: number;
  /** From the first byte of each phase to its last. */
  transferMs: number;
  /** Summing (and copying the result into the caller's buffer). */
  reduceMs: number;
  /** Bytes this rank wrote into its own arena. */
  bytesLocal: number;
  /** Bytes this rank received from other stores over RPC. */
  bytesMoved: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

/** A phase of parked reads: when its first answer began arriving and when all were in. */
interface Phase {
  first: bigint | null;
  done: Promise<unknown>;
}

export class StoreCollective {
  /** The next step expected (null before the first call). */
  private next: number | null = null;
  private busy = false;
  private broken: TrellisError | null = null;
  private closing: Promise<void> | null = null;
  /** Ids this rank published, by step, until known consumed; deleted at close. */
  private readonly published = new Map<number, string[]>();
  private readonly onAbort: () => void;
  /** Rejects the step in flight (set while one runs). */
  private failStep: ((e: TrellisError) => void) | null = null;

  private constructor(
    private readonly client: TrellisClient,
    readonly spec: GroupSpec,
    /** One RPC client per rank (null for this rank); ranks on one store share it. */
    private readonly peers: (RemoteClient | null)[],
    private readonly scratch: { buffer: Uint8Array; abort(): Promise<void> } | null,
    private readonly timeoutMs: number,
    readonly algorithm: Algorithm,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.onAbort = () =>
      this.breakGroup(new TrellisError('ERR_COLLECTIVE_ABORTED', `group ${spec.group}: aborted by its signal`));
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /**
   * Opens rank `spec.rank` of the group over the local store client (IPC, to
   * the store of the node the rank runs on, which must serve RPC in a
   * cluster), and connects to the peer stores over RPC.
   */
  static async open(client: TrellisClient, spec: GroupSpec, opts: CollectiveOptions = {}): Promise<StoreCollective> {
    if (client?.transport !== 'ipc')
      throw invalidParameter('client', 'a TrellisClient (IPC) to the local store', client);
    const s = checkGroupSpec(spec);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
      throw invalidParameter('opts.timeoutMs', 'a positive number of milliseconds', timeoutMs);
    }
    const algorithm = opts.algorithm ?? 'reduce-scatter';
    if (algorithm !== 'reduce-scatter' && algorithm !== 'reduce') {
      throw invalidParameter('opts.algorithm', "'reduce-scatter' or 'reduce'", algorithm);
    }
    if (opts.signal?.aborted) throw new TrellisError('ERR_COLLECTIVE_ABORTED', `group ${s.group}: aborted before open`);
    const token = opts.token ?? process.env.TRELLIS_TOKEN;
    const peers: (RemoteClient | null)[] = new Array(s.ranks).fill(null);
    let scratch: { buffer: Uint8Array; abort(): Promise<void> } | null = null;
    try {
      if (s.ranks > 1) {
        const instances = await client.instances();
        const find = (m: { rank: number; instance: string }): InstanceInfo => {
          const i = instances.find((x) => String(x.instanceId) === m.instance || x.storeId === m.instance);
          if (!i) {
            throw new TrellisError(
              'ERR_COLLECTIVE_ABORTED',
              `group ${s.group}: rank ${m.rank}'s store ${m.instance} is not a live instance`,
            );
          }
          return i;
        };
        const self = find(s.members[s.rank]);
        if (self.instanceId !== client.instanceId) {
          throw new TrellisError(
            'ERR_BAD_REQUEST',
            `rank ${s.rank} is placed on store ${s.members[s.rank].instance}, but the client is connected to instance ${client.instanceId}`,
          );
        }
        // Connect from this node's own RPC address, so traffic runs between the two stores' addresses.
        const host = self.rpc?.host;
        const localAddress = host && host !== '0.0.0.0' && host !== '::' ? host : undefined;
        const byStore = new Map<number, Promise<RemoteClient>>();
        // Every peer, whatever the algorithm: a broadcast may come from any root.
        for (const m of s.members) {
          if (m.rank === s.rank) continue;
          const i = find(m);
          if (!i.rpc) throw new TrellisError('ERR_UNSUPPORTED', `rank ${m.rank}'s store serves no RPC endpoint`);
          const rpc = `${i.rpc.host}:${i.rpc.port}`;
          let c = byStore.get(i.instanceId);
          if (!c) {
            c = RemoteClient.open({ rpc, token, localAddress, name: `collective ${s.group} rank ${s.rank}` });
            byStore.set(i.instanceId, c);
          }
          peers[m.rank] = await c;
        }
        const bytes = scratchBytes(s, algorithm);
        if (bytes > 0) {
          const w = await client.createBlob(bytes);
          scratch = { buffer: w.buffer, abort: () => w.abort() };
        }
      }
    } catch (e) {
      for (const p of new Set(peers)) await p?.close().catch(() => {});
      throw e;
    }
    return new StoreCollective(client, s, peers, scratch, timeoutMs, algorithm, opts.signal);
  }

  /**
   * Sums `buf` (spec.size floats) over all ranks in rank order and leaves the
   * sum in `buf` on every rank, bit-identical. `step` goes up by one per call
   * (allReduce and broadcast share the count; the first call may start anywhere).
   */
  allReduce(step: number, buf: Float32Array): Promise<ExchangeTiming> {
    return this.run(step, buf, 'allReduce', (t) =>
      this.algorithm === 'reduce' ? this.reduceAtRoot(step, buf, t) : this.reduceScatter(step, buf, t),
    );
  }

  /** Copies rank `root`'s `buf` into every other rank's `buf` (parameters at the start, after a restart). */
  broadcast(step: number, buf: Float32Array, root = 0): Promise<ExchangeTiming> {
    if (!Number.isInteger(root) || root < 0 || root >= this.spec.ranks) {
      return Promise.reject(invalidParameter('root', `a rank in [0, ${this.spec.ranks - 1}]`, root));
    }
    return this.run(step, buf, 'broadcast', (t) => this.bcast(step, buf, root, t));
  }

  /** Deletes every object this rank published and releases its scratch and connections; idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.breakGroup(new TrellisError('ERR_COLLECTIVE_ABORTED', `group ${this.spec.group}: this rank was closed`));
      this.signal?.removeEventListener('abort', this.onAbort);
      for (const p of new Set(this.peers)) await p?.close().catch(() => {});
      const ids = [...this.published.values()].flat();
      this.published.clear();
      // One by one: most are gone already (their last read deleted them).
      await Promise.all(ids.map((id) => this.client.delete(id).catch(() => {})));
      await this.scratch?.abort().catch(() => {});
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- one step ---------------------------------------------------------------

  private async run(
    step: number,
    buf: Float32Array,
    what: string,
    body: (t: ExchangeTiming) => Promise<void>,
  ): Promise<ExchangeTiming> {
    if (this.closing) throw new TrellisError('ERR_CLOSED', `group ${this.spec.group}: this rank was closed`);
    if (this.broken) throw this.broken;
    if (this.busy) throw new TrellisError('ERR_BAD_REQUEST', `${what}: a step of this rank is still running`);
    if (!Number.isSafeInteger(step) || step < 0 || (this.next !== null && step !== this.next)) {
      throw invalidParameter('step', this.next === null ? 'a non-negative integer' : `step ${this.next}`, step);
    }
    if (!(buf instanceof Float32Array) || buf.length !== this.spec.size) {
      throw invalidParameter('buf', `a Float32Array of ${this.spec.size} elements`, buf);
    }
    this.busy = true;
    this.next = step + 1;
    const timing: ExchangeTiming = { writeMs: 0, waitMs: 0, transferMs: 0, reduceMs: 0, bytesLocal: 0, bytesMoved: 0 };
    let timer: NodeJS.Timeout | undefined;
    const failed = new Promise<never>((_, reject) => {
      this.failStep = reject;
      timer = setTimeout(
        () =>
          this.breakGroup(
            new TrellisError(
              'ERR_COLLECTIVE_ABORTED',
              `group ${this.spec.group}: ${what} step ${step} did not finish within ${this.timeoutMs} ms (a peer rank is gone or stalled)`,
              { cause: new TrellisError('ERR_TIMEOUT', `step ${step} timed out`) },
            ),
          ),
        this.timeoutMs,
      );
    });
    try {
      const work = body(timing).catch((e) => {
        throw this.breakGroup(
          new TrellisError(
            'ERR_COLLECTIVE_ABORTED',
            `group ${this.spec.group}: ${what} step ${step} failed: ${(e as Error).message}`,
            { cause: e },
          ),
        );
      });
      await Promise.race([work, failed]);
      return timing;
    } finally {
      clearTimeout(timer);
      this.failStep = null;
      this.busy = false;
    }
  }

  /** Marks the group broken (the first reason stands), fails the step in flight and cuts the peer connections. */
  private breakGroup(e: TrellisError): TrellisError {
    if (this.broken) {
      this.failStep?.(this.broken);
      return this.broken;
    }
    this.broken = e;
    // Closing the sockets first: no parked read may land in a buffer after its step failed.
    for (const p of new Set(this.peers)) p?.close().catch(() => {});
    this.failStep?.(e);
    return e;
  }

  private tag(rank: number, step: number, piece: Piece): string {
    return tagOf(this.spec.group, rank, step, piece);
  }

  /** A read parked at rank `k`'s store: `into` receives the range when `k` binds the tag. */
  private park(k: number, step: number, piece: Piece, into: Uint8Array, offset: number, phase: Phase): Promise<void> {
    const peer = this.peers[k];
    if (!peer) return Promise.reject(new TrellisError('ERR_INTERNAL', `no connection to rank ${k}'s store`));
    return peer.read(this.tag(k, step, piece), into, { offset, wait: true, timeoutMs: this.timeoutMs }).then(() => {
      // Answers arrive one after another; the first settled marks when bytes began coming.
      phase.first ??= process.hrtime.bigint();
    });
  }

  /** Waits for a phase; its time splits into waiting (to its first answer) and transfer (the rest). */
  private async finish(p: Phase, since: bigint, t: ExchangeTiming, bytes: number): Promise<void> {
    await p.done;
    const end = process.hrtime.bigint();
    const first = p.first ?? end;
    t.waitMs += Number(first - since) / 1e6;
    t.transferMs += Number(end - first) / 1e6;
    t.bytesMoved += bytes;
  }

  /** Writes `data` into a new blob of the local arena and seals it under the tag, for `reads` readers. */
  private async publish(step: number, piece: Piece, data: Float32Array, reads: number, t: ExchangeTiming) {
    const t0 = process.hrtime.bigint();
    const w = await this.client.createBlob(data.byteLength);
    new Float32Array(w.buffer.buffer, w.buffer.byteOffset, data.length).set(data);
    const id = await w.seal({ tag: this.tag(this.spec.rank, step, piece), reads });
    this.remember(step, id);
    t.writeMs += ms(t0);
    t.bytesLocal += data.byteLength;
  }

  private remember(step: number, id: string): void {
    const list = this.published.get(step);
    if (list) list.push(id);
    else this.published.set(step, [id]);
  }

  /**
   * Once a rank has finished allReduce `step`, every peer has started it,
   * so each has finished reading what this rank published before it.
   */
  private consumedBefore(step: number): void {
    for (const s of this.published.keys()) if (s < step) this.published.delete(s);
  }

  private bytesOf(buf: Float32Array, start: number, end: number): Uint8Array {
    return new Uint8Array(buf.buffer, buf.byteOffset + start * 4, (end - start) * 4);
  }

  // ---- algorithms ---------------------------------------------------------------

  private async reduceScatter(step: number, buf: Float32Array, t: ExchangeTiming): Promise<void> {
    const { rank: r, ranks: n, size } = this.spec;
    if (n === 1) return;
    const [lo, hi] = chunkOf(size, n, r);
    const len = hi - lo;
    const scratch = this.scratch!.buffer;
    // Peer k's chunk r lands at slot k' (ranks other than r, in order) of the scratch blob.
    const slots: Float32Array[] = [];
    const rsReads: Promise<void>[] = [];
    const agReads: Promise<void>[] = [];
    const rs: Phase = { first: null, done: Promise.resolve() };
    const ag: Phase = { first: null, done: Promise.resolve() };
    let agBytes = 0;
    for (let k = 0, slot = 0; k < n; k++) {
      if (k === r) continue;
      const into = new Uint8Array(scratch.buffer, scratch.byteOffset + slot * len * 4, len * 4);
      slots[k] = new Float32Array(into.buffer, into.byteOffset, len);
      slot++;
      if (len > 0) rsReads.push(this.park(k, step, 'grad', into, lo * 4, rs));
      const [klo, khi] = chunkOf(size, n, k);
      if (khi > klo) {
        agReads.push(this.park(k, step, 'sum', this.bytesOf(buf, klo, khi), 0, ag));
        agBytes += (khi - klo) * 4;
      }
    }
    rs.done = Promise.all(rsReads);
    ag.done = Promise.all(agReads);
    // A failure of one phase must not go unobserved while the other is awaited.
    rs.done.catch(() => {});
    ag.done.catch(() => {});
    // The sum's blob is allocated while the gradients are published (one more request in the same batch).
    const sumBlob = len > 0 ? this.client.createBlob(len * 4) : null;
    sumBlob?.catch(() => {});
    await this.publish(step, 'grad', buf, n - 1, t);
    const published = process.hrtime.bigint();
    await this.finish(rs, published, t, (n - 1) * len * 4);
    if (sumBlob) {
      const t0 = process.hrtime.bigint();
      const w = await sumBlob;
      const t1 = process.hrtime.bigint();
      const out = new Float32Array(w.buffer.buffer, w.buffer.byteOffset, len);
      const own = buf.subarray(lo, hi);
      // Rank order: ((g0 + g1) + g2) ...; a Float32Array stores each partial sum rounded to float32.
      out.set(r === 0 ? own : slots[0]);
      for (let k = 1; k < n; k++) {
        const src = k === r ? own : slots[k];
        for (let i = 0; i < len; i++) out[i] += src[i];
      }
      own.set(out);
      const t2 = process.hrtime.bigint();
      const id = await w.seal({ tag: this.tag(r, step, 'sum'), reads: n - 1 });
      this.remember(step, id);
      t.reduceMs += Number(t2 - t1) / 1e6;
      t.writeMs += Number(t1 - t0) / 1e6 + ms(t2);
      t.bytesLocal += len * 4;
    }
    await this.finish(ag, process.hrtime.bigint(), t, agBytes);
    this.consumedBefore(step);
  }

  private async reduceAtRoot(step: number, buf: Float32Array, t: ExchangeTiming): Promise<void> {
    const { rank: r, ranks: n, size } = this.spec;
    if (n === 1) return;
    if (r !== 0) {
      const phase: Phase = { first: null, done: Promise.resolve() };
      phase.done = this.park(0, step, 'sum', this.bytesOf(buf, 0, size), 0, phase);
      phase.done.catch(() => {});
      await this.publish(step, 'grad', buf, 1, t);
      await this.finish(phase, process.hrtime.bigint(), t, size * 4);
      this.consumedBefore(step);
      return;
    }
    const scratch = this.scratch!.buffer;
    const slots: Float32Array[] = [];
    const phase: Phase = { first: null, done: Promise.resolve() };
    const reads: Promise<void>[] = [];
    for (let k = 1; k < n; k++) {
      const into = new Uint8Array(scratch.buffer, scratch.byteOffset + (k - 1) * size * 4, size * 4);
      slots[k] = new Float32Array(into.buffer, into.byteOffset, size);
      reads.push(this.park(k, step, 'grad', into, 0, phase));
    }
    phase.done = Promise.all(reads);
    const since = process.hrtime.bigint();
    const t0 = process.hrtime.bigint();
    const w = await this.client.createBlob(size * 4);
    t.writeMs += ms(t0);
    await this.finish(phase, since, t, (n - 1) * size * 4);
    const t1 = process.hrtime.bigint();
    const out = new Float32Array(w.buffer.buffer, w.buffer.byteOffset, size);
    out.set(buf);
    for (let k = 1; k < n; k++) {
      const src = slots[k];
      for (let i = 0; i < size; i++) out[i] += src[i];
    }
    buf.set(out);
    const t2 = process.hrtime.bigint();
    const id = await w.seal({ tag: this.tag(0, step, 'sum'), reads: n - 1 });
    this.remember(step, id);
    t.reduceMs += Number(t2 - t1) / 1e6;
    t.writeMs += ms(t2);
    t.bytesLocal += size * 4;
    this.consumedBefore(step);
  }

  private async bcast(step: number, buf: Float32Array, root: number, t: ExchangeTiming): Promise<void> {
    const { rank: r, ranks: n, size } = this.spec;
    if (n === 1) return;
    if (r === root) {
      await this.publish(step, 'bcast', buf, n - 1, t);
      return;
    }
    const phase: Phase = { first: null, done: Promise.resolve() };
    phase.done = this.park(root, step, 'bcast', this.bytesOf(buf, 0, size), 0, phase);
    await this.finish(phase, process.hrtime.bigint(), t, size * 4);
  }
}

/** Bytes of the scratch blob the peers' pieces land in. */
function scratchBytes(s: GroupSpec, algorithm: Algorithm): number {
  if (algorithm === 'reduce') return s.rank === 0 ? (s.ranks - 1) * s.size * 4 : 0;
  const [lo, hi] = chunkOf(s.size, s.ranks, s.rank);
  return (s.ranks - 1) * (hi - lo) * 4;
}
