/**
 * Repair: when a store's lease expires, every replicated object that falls
 * below its factor gets its missing copies again, from a surviving copy.
 *
 * Every store with the etcd backend runs a Repairer; once per interval each
 * tries to take the `repair` lock, which is held by the store's own lease,
 * so exactly one store repairs at a time and a dead repairer's lock goes
 * with its lease. The holder scans the replica sets and has one copy made
 * at a time (Replication.addCopy: the store that makes a copy adds it to the
 * set in a transaction that refuses a copy the set no longer needs, so a
 * second repairer after a lock hand-over never leaves an extra copy).
 *
 * Rate limit: before a copy of n bytes starts, n tokens are taken from a
 * token bucket that fills at `rateBytesPerSec` and holds one second's worth,
 * so copies started in any window of t seconds total at most
 * rate * (t + 1) bytes plus the first one: repair cannot take the network
 * and the stores' memory bandwidth from the jobs running at the time.
 *
 * Every store counts the objects it sees under-replicated or lost at each
 * scan (status.repair), leader or not; the blobs of local copies of
 * under-replicated objects are spilled last.
 */
import { TokenBucket } from 'limiter';
import { TrellisError } from '../errors.js';
import type { MetaService } from '../meta/meta-service.js';
import { type Logger, silentLogger } from '../observe/logger.js';
import type { RepairStatus, ReplicaSet } from '../protocol/records.js';
import type { ObjectTable } from './object-table.js';
import { Placement } from './replica-placement.js';
import type { Replication } from './replication.js';

export interface RepairOptions {
  /** Repair copies at most this many bytes per second (default 128 MiB/s). */
  rateBytesPerSec?: number;
  /** How often the replica sets are scanned (default 1000 ms). */
  intervalMs?: number;
  /** Where repair failures go (the store's logger). */
  logger?: Logger;
}

/** One copy repair made: when it started, of which object, how many bytes. */
export interface RepairRecord {
  startedAt: number;
  id: string;
  bytes: number;
}

export const DEFAULT_REPAIR_RATE = 128 * 1024 * 1024;
/**
 * A set with every copy alive but fewer than its factor, changed this
 * recently, is being filled by the store that asked for it (persist,
 * createDataset): repairing it too would only race that store's copies.
 */
const FILLING_MS = 10_000;
const RECENT = 64;

function idleFigures() {
  return { leader: false, underReplicated: 0, lost: 0, bytesRepairing: 0, bytesRepaired: 0, copiesMade: 0 };
}

/** The repair status of a store that runs no repairer (local backend, or no RPC). */
export function noRepairStatus(replicasHere: number): RepairStatus {
  return { ...idleFigures(), rateBytesPerSec: 0, replicasHere, recent: [] };
}

export class Repairer {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  private readonly bucket: TokenBucket;
  private readonly rate: number;
  private readonly log: Logger;
  private readonly figures = idleFigures();
  /** The latest copies this repairer started, oldest first. */
  readonly recent: RepairRecord[] = [];
  private wake: (() => void) | null = null;

  constructor(
    private readonly meta: MetaService,
    private readonly replication: Replication,
    private readonly table: ObjectTable,
    private readonly instanceId: number,
    private readonly opts: RepairOptions = {},
  ) {
    this.rate = opts.rateBytesPerSec ?? DEFAULT_REPAIR_RATE;
    this.bucket = new TokenBucket({ bucketSize: this.rate, tokensPerInterval: this.rate, interval: 'second' });
    this.log = opts.logger ?? silentLogger;
  }

  /** Scans now and then every interval. */
  start(): void {
    const every = this.opts.intervalMs ?? 1000;
    this.timer = setInterval(() => this.tick(), every);
    this.timer.unref();
    this.tick();
  }

  private tick(): void {
    if (this.running || this.closed) return;
    this.running = this.scan()
      .catch((e) => {
        if (!this.closed)
          this.log.warn({ code: (e as TrellisError).code }, `repair scan failed: ${(e as Error).message}`);
      })
      .finally(() => {
        this.running = null;
      });
  }

  status(): RepairStatus {
    return {
      ...this.figures,
      rateBytesPerSec: this.rate,
      replicasHere: this.replication.copiesHere,
      recent: this.recent.map((r) => ({ ...r })),
    };
  }

  private async scan(): Promise<void> {
    const holder = await this.meta.holdLock('repair');
    this.figures.leader = holder === this.instanceId;
    // Liveness from etcd itself, not the watch-fed view: a scan acts on what it sees.
    await this.meta.instances();
    const sets = await this.meta.listReplicaSets();
    const under: ReplicaSet[] = [];
    let lost = 0;
    for (const set of sets) {
      const live = this.replication.liveness(set).filter((c) => c.alive).length;
      if (live === 0) lost++;
      else if (live < set.factor) under.push(set);
    }
    this.figures.underReplicated = under.length;
    this.figures.lost = lost;
    this.protect(under);
    if (!this.figures.leader) return;
    const now = Date.now();
    for (const set of under) {
      if (this.closed) return;
      const lostCopy = this.replication.liveness(set).some((c) => !c.alive);
      if (!lostCopy && now - set.updatedAt < FILLING_MS) continue;
      await this.repair(set);
    }
  }

  /** Local copies of under-replicated objects are the last thing spilled. */
  private protect(under: ReplicaSet[]): void {
    const blobs = new Set<string>();
    for (const set of under) {
      const local = this.replication.localCopy(set.id);
      if (local === undefined) continue;
      for (const e of this.table.tree(local)) if (e.isBlob) blobs.add(e.id);
    }
    this.table.setSpillLast(blobs);
  }

  private async repair(set: ReplicaSet): Promise<void> {
    const live = this.replication.liveness(set).filter((c) => c.alive).length;
    const plan = new Placement(await this.meta.instances());
    for (let k = live; k < set.factor && !this.closed; k++) {
      await this.take(set.nbytes);
      if (this.closed) return;
      this.recent.push({ startedAt: Date.now(), id: set.id, bytes: set.nbytes });
      if (this.recent.length > RECENT) this.recent.shift();
      this.figures.bytesRepairing += set.nbytes;
      try {
        const copied = await this.replication.addCopy(set.id, plan);
        if (copied > 0) {
          this.figures.bytesRepaired += copied;
          this.figures.copiesMade++;
        }
      } catch (e) {
        // No store can take it now (or its last copy just went): the next scan tries again.
        if (e instanceof TrellisError) this.log.warn({ id: set.id, code: e.code }, `repair failed: ${e.message}`);
        else throw e;
        return;
      } finally {
        this.figures.bytesRepairing -= set.nbytes;
      }
    }
  }

  /** Waits until `n` bytes' worth of tokens were taken, a bucketful at a time (a copy may exceed one). */
  private async take(n: number): Promise<void> {
    for (let left = n; left > 0 && !this.closed; ) {
      const part = Math.min(left, this.rate);
      await Promise.race([
        this.bucket.removeTokens(part),
        new Promise<void>((r) => {
          this.wake = r;
        }),
      ]);
      left -= part;
    }
  }

  /** Stops scanning; a copy in flight finishes or fails with the store. Safe to call twice. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.wake?.();
  }
}
