/**
 * What a store's clients ask of it, counted on the hot path as plain
 * numbers (an increment costs nothing next to a request): gets and puts and
 * their bytes, by transport and by kind of object. prom-client reads these
 * only when /metrics is scraped (store-metrics.ts), and times requests only
 * once it has plugged a timer in: a store that serves no metrics pays for no
 * clock reads.
 *
 * The kind is the object's typename. Clients choose typenames, so after
 * MAX_KINDS distinct ones further kinds count as 'other': one client must
 * not be able to grow the metrics without bound.
 */

export type Transport = 'ipc' | 'rpc';
export const TRANSPORTS: readonly Transport[] = ['ipc', 'rpc'];

export interface KindCounts {
  gets: number;
  getBytes: number;
  puts: number;
  putBytes: number;
}

export const MAX_KINDS = 32;
export const OTHER_KIND = 'other';

/** Records a request's service time: its type, transport and seconds. */
export type RequestTimer = (type: string, transport: Transport, seconds: number) => void;

export class StoreTraffic {
  private readonly byTransport: Record<Transport, Map<string, KindCounts>> = { ipc: new Map(), rpc: new Map() };
  private readonly kinds = new Set<string>();
  /** Set by the metrics registry; null: requests are not timed. */
  timer: RequestTimer | null = null;

  private counts(transport: Transport, typename: string): KindCounts {
    let kind = typename;
    if (!this.kinds.has(kind)) {
      if (this.kinds.size >= MAX_KINDS) kind = OTHER_KIND;
      else this.kinds.add(kind);
    }
    const m = this.byTransport[transport];
    let c = m.get(kind);
    if (!c) {
      c = { gets: 0, getBytes: 0, puts: 0, putBytes: 0 };
      m.set(kind, c);
    }
    return c;
  }

  /** Objects handed out by a get: one each, their bytes (views over IPC, sent bytes over RPC). */
  got(transport: Transport, objects: readonly { typename: string; nbytes: number }[]): void {
    for (const o of objects) {
      const c = this.counts(transport, o.typename);
      c.gets++;
      c.getBytes += o.nbytes;
    }
  }

  /** An object a client created, with the bytes of blob data it brought (0 for an object over existing members). */
  put(transport: Transport, typename: string, bytes: number): void {
    const c = this.counts(transport, typename);
    c.puts++;
    c.putBytes += bytes;
  }

  /** Every kind's counts on one transport. */
  snapshot(transport: Transport): IterableIterator<[kind: string, counts: KindCounts]> {
    return this.byTransport[transport].entries();
  }
}

/** A stopwatch for one request, or null when requests are not timed. */
export function startTimer(traffic: StoreTraffic, type: string, transport: Transport): (() => void) | null {
  const timer = traffic.timer;
  if (timer === null) return null;
  const t0 = performance.now();
  return () => timer(type, transport, (performance.now() - t0) / 1000);
}

/** Runs a request's handler and stops `done` when its answer is ready: at once, or when its promise settles. */
export function timed<T extends object>(done: (() => void) | null, fn: () => T | Promise<T>): T | Promise<T> {
  if (done === null) return fn();
  let out: T | Promise<T>;
  try {
    out = fn();
  } catch (e) {
    done();
    throw e;
  }
  if (out instanceof Promise) out.then(done, done);
  else done();
  return out;
}
