/**
 * Collectives through the stores: the ranks of a data-parallel job sum their
 * gradients (allReduce) and share parameters (broadcast) by writing them into
 * their own node's arena and reading each other's over RPC. No byte of a
 * gradient goes through Redis, etcd or JSON.
 *
 * One step of allReduce, 'reduce' (the default, chosen by measurement):
 *   1. Rank 0 parks a read of every peer's gradients at the peer's store. A
 *      read with `wait` sits in the store until the tag it names is bound,
 *      so the answer leaves the moment the peer seals: control costs no
 *      round trip of its own. Each peer parks a read of the sum at store 0.
 *   2. Each peer writes its gradients into a blob of its own arena and seals
 *      it under a tag that allows one read (the store deletes it after).
 *   3. The gradients land straight in a scratch blob of rank 0's arena; rank
 *      0 sums in rank order, ((g0 + g1) + g2) ..., into a new blob, seals it
 *      (N-1 reads) and copies it into its buffer; it lands straight in each
 *      peer's buffer.
 * 'reduce-scatter' does the same per chunk: rank r sums chunk r of everyone's
 * gradients and everyone reads everyone's summed chunk (all-gather). Either
 * way every element is summed once, by one rank, in one order, so every rank
 * ends with the same bits.
 *
 * Failure. A step that cannot finish within timeoutMs, whose peer store drops
 * the connection, or whose signal aborts, fails with ERR_COLLECTIVE_ABORTED
 * (the cause is the underlying error); the group is broken then and every
 * later call fails the same way. The peer connections are closed at once, so
 * no parked read can land in the caller's buffer after the step failed.
 * The rank also ends its tag scope in its store, which fails the reads its
 * peers parked on it at once (ERR_COLLECTIVE_ABORTED from the store), so one
 * rank's failure reaches the others in milliseconds, not at their timeouts;
 * a rank that dies has its scope ended by its store, and its objects deleted
 * (tags belong to the connection that bound them). open() claims the scope
 * before anything else, so this holds for a rank that dies before its first
 * write too (during the first broadcast, say); one that dies before its open
 * got that far is noticed by its job's agent and scheduler instead. close() ends the scope
 * too: it deletes what this rank published.
 *
 * @example
 *   const c = await StoreCollective.open(client, { group: 'job7/0', rank, ranks: 3, size: g.length, members });
 *   await c.broadcast(0, params);
 *   for (let step = 1; ; step++) { computeGradients(g); await c.allReduce(step, g); apply(g); }
 *   await c.close();
 */
import type { BlobWriter, TrellisClient } from '../client/client.js';
import { RemoteClient } from '../client/remote-client.js';
import { invalidParameter, TrellisError } from '../errors.js';
import type { InstanceInfo } from '../protocol/records.js';
import { checkGroupSpec, chunkOf, type GroupSpec, type Piece, scopeOfRank, tagOf } from './group-spec.js';

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
   * 'reduce' (default): rank 0 sums everything and the others read the sum.
   * 'reduce-scatter': reduce-scatter + all-gather, each rank owns 1/N of the
   * buffer. Every rank of a group must use the same one. The default is
   * chosen by measurement (bench/gradient-exchange.js, bench/RESULTS.md): on
   * 2 vCPUs, where the stores and ranks share the CPUs, the fewer messages
   * of 'reduce' win at the MLP's 0.94 MB for 2 and 3 ranks, and at 8 MB for
   * 3; 'reduce-scatter' wins at 8 MB for 2 ranks.
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
/** A broadcast's acknowledgement: an empty-ish blob (its tag is the message). */
const ACK_BYTES = 4;
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
  private readonly onAbort: () => void;
  /** Blobs allocated ahead for the next step, by size (off the next step's critical path). */
  private readonly ahead = new Map<number, Promise<BlobWriter>>();
  /** The seal that ended the previous step on rank 0 ('reduce'), answered while the next one starts. */
  private sealing: Promise<void> | null = null;
  /** Blobs taken for a step and not sealed yet. */
  private readonly unsealed = new Set<BlobWriter>();
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
    const algorithm = opts.algorithm ?? 'reduce';
    if (algorithm !== 'reduce-scatter' && algorithm !== 'reduce') {
      throw invalidParameter('opts.algorithm', "'reduce-scatter' or 'reduce'", algorithm);
    }
    if (opts.signal?.aborted) throw new TrellisError('ERR_COLLECTIVE_ABORTED', `group ${s.group}: aborted before open`);
    const token = opts.token ?? process.env.TRELLIS_TOKEN;
    const peers: (RemoteClient | null)[] = new Array(s.ranks).fill(null);
    let scratch: { buffer: Uint8Array; abort(): Promise<void> } | null = null;
    const scope = scopeOfRank(s.group, s.rank);
    try {
      // Owned from here: should this rank die before its first write, its store ends the scope and
      // the reads its peers parked on it fail at once, not at their timeout.
      if (s.ranks > 1) await client.claimScope(scope);
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
      if (s.ranks > 1) await client.endScope(scope).catch(() => {});
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
      // The last seal is answered first: by then the reads parked on it have pinned its object,
      // which ending the scope (below) would otherwise delete under them.
      const sealed = this.previousSeal().catch(() => {});
      this.breakGroup(
        new TrellisError('ERR_COLLECTIVE_ABORTED', `group ${this.spec.group}: this rank was closed`),
        false,
      );
      this.signal?.removeEventListener('abort', this.onAbort);
      await sealed;
      for (const p of new Set(this.peers)) await p?.close().catch(() => {});
      // Deletes what this rank published that no peer read.
      await this.client.endScope(this.scope).catch(() => {});
      const ahead = [...this.ahead.values()];
      this.ahead.clear();
      await Promise.all(ahead.map((w) => w.then((b) => b.abort()).catch(() => {})));
      const unsealed = [...this.unsealed];
      this.unsealed.clear();
      await Promise.all(unsealed.map((w) => w.abort().catch(() => {})));
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
  private breakGroup(e: TrellisError, endScope = true): TrellisError {
    if (this.broken) {
      this.failStep?.(this.broken);
      return this.broken;
    }
    this.broken = e;
    // Closing the sockets first: no parked read may land in a buffer after its step failed.
    for (const p of new Set(this.peers)) p?.close().catch(() => {});
    // Ending this rank's tag scope fails the peers' reads parked on it now, rather than at their timeout.
    if (endScope) this.client.endScope(this.scope).catch(() => {});
    this.failStep?.(e);
    return e;
  }

  private tag(rank: number, step: number, piece: Piece): string {
    return tagOf(this.spec.group, rank, step, piece);
  }

  /** This rank's tag scope: ending it deletes what it published and fails the reads parked on it. */
  private get scope(): string {
    return scopeOfRank(this.spec.group, this.spec.rank);
  }

  /** A read parked at rank `k`'s store: `into` receives the range when `k` binds the tag. */
  private park(k: number, step: number, piece: Piece, into: Uint8Array, offset: number, phase: Phase): Promise<void> {
    const peer = this.peers[k];
    if (!peer) return Promise.reject(new TrellisError('ERR_INTERNAL', `no connection to rank ${k}'s store`));
    const onStart = () => {
      phase.first ??= process.hrtime.bigint();
    };
    return peer
      .read(this.tag(k, step, piece), into, { offset, wait: true, timeoutMs: this.timeoutMs, onStart })
      .then(() => {});
  }

  /**
   * Waits for a phase from `since` (when this rank had nothing left to do):
   * the time until its first answer began arriving is waiting for peers, the
   * rest is transfer.
   */
  private async finish(p: Phase, since: bigint, t: ExchangeTiming, bytes: number): Promise<void> {
    await p.done;
    const end = process.hrtime.bigint();
    const first = p.first === null || p.first > end ? end : p.first < since ? since : p.first;
    t.waitMs += Number(first - since) / 1e6;
    t.transferMs += Number(end - first) / 1e6;
    t.bytesMoved += bytes;
  }

  /**
   * A new blob of `bytes` in the local arena: the one allocated ahead at the
   * end of the previous step when there is one (a step's blobs are the same
   * sizes every step).
   */
  private blob(bytes: number): Promise<BlobWriter> {
    const w = this.ahead.get(bytes) ?? this.client.createBlob(bytes);
    this.ahead.delete(bytes);
    // Unsealed until sealed: a step that fails between the two leaves it to close() to abort.
    return w.then(async (b) => {
      if (this.closing) {
        // close() ran while this was allocated: it is nobody's now.
        await b.abort().catch(() => {});
        throw new TrellisError('ERR_COLLECTIVE_ABORTED', `group ${this.spec.group}: this rank was closed`);
      }
      this.unsealed.add(b);
      return b;
    });
  }

  /** Waits for the previous step's last seal: a step whose seal failed fails the next one. */
  private async previousSeal(): Promise<void> {
    const p = this.sealing;
    this.sealing = null;
    if (p) await p;
  }

  /** Seals a blob of this step under its tag, for `reads` readers. */
  private async seal(w: BlobWriter, step: number, piece: Piece, reads: number): Promise<void> {
    await w.seal({ tag: this.tag(this.spec.rank, step, piece), reads });
    this.unsealed.delete(w);
  }

  /** Allocates the blobs of the next step ahead, while the caller computes. */
  private allocateAhead(sizes: number[]): void {
    for (const bytes of sizes) {
      if (bytes === 0 || this.ahead.has(bytes) || this.closing || this.broken) continue;
      const w = this.client.createBlob(bytes);
      w.catch(() => {});
      this.ahead.set(bytes, w);
    }
  }

  /** Writes `data` into a new blob of the local arena and seals it under the tag, for `reads` readers. */
  private async publish(step: number, piece: Piece, data: Float32Array, reads: number, t: ExchangeTiming) {
    const t0 = process.hrtime.bigint();
    const w = await this.blob(data.byteLength);
    new Float32Array(w.buffer.buffer, w.buffer.byteOffset, data.length).set(data);
    await this.seal(w, step, piece, reads);
    t.writeMs += ms(t0);
    t.bytesLocal += data.byteLength;
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
    const sumBlob = len > 0 ? this.blob(len * 4) : null;
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
      await this.seal(w, step, 'sum', n - 1);
      t.reduceMs += Number(t2 - t1) / 1e6;
      t.writeMs += Number(t1 - t0) / 1e6 + ms(t2);
      t.bytesLocal += len * 4;
    }
    await this.finish(ag, process.hrtime.bigint(), t, agBytes);
    this.allocateAhead([size * 4, len * 4]);
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
      this.allocateAhead([size * 4]);
      return;
    }
    const scratch = this.scratch!.buffer;
    const slots: Float32Array[] = [];
    const phase: Phase = { first: null, done: Promise.resolve() };
    const reads: Promise<void>[] = [];
    for (let k = 1; k < n; k++) {
      const into = new Uint8Array(scratch.buffer, scratch.byteOffset + (k - 1) * size * 4, size * 4);
      slots[k] = new Float32Array(into.buffer, into.byteOffset, size);
      reads[k] = this.park(k, step, 'grad', into, 0, phase);
      reads[k].catch(() => {});
    }
    phase.done = Promise.all(reads.slice(1));
    phase.done.catch(() => {});
    const t0 = process.hrtime.bigint();
    await this.previousSeal();
    const since = process.hrtime.bigint();
    const w = await this.blob(size * 4);
    t.writeMs += ms(t0);
    const out = new Float32Array(w.buffer.buffer, w.buffer.byteOffset, size);
    // Rank order, each rank's gradients added as soon as they are in (the sum of the earlier
    // ranks is ready by then): ((g0 + g1) + g2) ..., while the later ranks' bytes still arrive.
    let summing = 0;
    for (let k = 1; k < n; k++) {
      await reads[k];
      const c0 = process.hrtime.bigint();
      const src = slots[k];
      if (k === 1) for (let i = 0; i < size; i++) out[i] = buf[i] + src[i];
      else for (let i = 0; i < size; i++) out[i] += src[i];
      summing += Number(process.hrtime.bigint() - c0) / 1e6;
    }
    await this.finish(phase, since, t, (n - 1) * size * 4);
    // The time spent summing while bytes still came is the reduce's, not the transfer's.
    t.transferMs = Math.max(0, t.transferMs - summing);
    const t1 = process.hrtime.bigint();
    buf.set(out);
    const t2 = process.hrtime.bigint();
    t.reduceMs += summing;
    // The sum is in buf already and the seal request is sent: its answer is awaited by the next
    // step, once that step's reads are parked, so the answer's trip is off the critical path.
    const sealing = this.seal(w, step, 'sum', n - 1);
    sealing.catch(() => {});
    this.sealing = sealing;
    t.reduceMs += Number(t2 - t1) / 1e6;
    t.writeMs += ms(t2);
    t.bytesLocal += size * 4;
    this.allocateAhead([size * 4]);
  }

  /**
   * The root publishes; the others read it and each answers with an empty
   * ack, which the root waits for: when broadcast returns on the root, every
   * rank has its copy, so the root may close at once without taking a
   * broadcast away from a peer that had not asked for it yet.
   */
  private async bcast(step: number, buf: Float32Array, root: number, t: ExchangeTiming): Promise<void> {
    const { rank: r, ranks: n, size } = this.spec;
    if (n === 1) return;
    await this.previousSeal();
    if (r === root) {
      const phase: Phase = { first: null, done: Promise.resolve() };
      const acks: Promise<void>[] = [];
      for (let k = 0; k < n; k++)
        if (k !== root) acks.push(this.park(k, step, 'ack', new Uint8Array(ACK_BYTES), 0, phase));
      phase.done = Promise.all(acks);
      phase.done.catch(() => {});
      await this.publish(step, 'bcast', buf, n - 1, t);
      await this.finish(phase, process.hrtime.bigint(), t, 0);
      return;
    }
    const phase: Phase = { first: null, done: Promise.resolve() };
    phase.done = this.park(root, step, 'bcast', this.bytesOf(buf, 0, size), 0, phase);
    await this.finish(phase, process.hrtime.bigint(), t, size * 4);
    const w = await this.blob(ACK_BYTES);
    await this.seal(w, step, 'ack', 1);
  }
}

/** Bytes of the scratch blob the peers' pieces land in. */
function scratchBytes(s: GroupSpec, algorithm: Algorithm): number {
  if (algorithm === 'reduce') return s.rank === 0 ? (s.ranks - 1) * s.size * 4 : 0;
  const [lo, hi] = chunkOf(s.size, s.ranks, s.rank);
  return (s.ranks - 1) * (hi - lo) * 4;
}
