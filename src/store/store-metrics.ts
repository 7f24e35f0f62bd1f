/**
 * A store's Prometheus metrics (docs/OPERATIONS.md, "Metrics", lists them
 * with what to alert on). Everything but the latency histogram is read at
 * scrape time from what the store counts anyway (its status, the table's and
 * the RPC server's counters, StoreTraffic), so serving metrics adds nothing
 * to a request but the histogram's observe.
 *
 * One registry per store, not prom-client's global one: tests run several
 * stores in one process. Loaded only when metrics are asked for.
 *
 * @example
 *   const registry = storeMetrics(store);
 *   await registry.metrics(); // Prometheus text
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { StoreStatus } from '../protocol/records.js';
import type { MigrationStats } from './migrate.js';
import type { RpcStats } from './rpc-server.js';
import type { StoreServer } from './store-server.js';
import { type KindCounts, TRANSPORTS, type Transport } from './store-traffic.js';

/** From 10 µs (a get over IPC) to 10 s (a large put over RPC, a slow etcd). */
export const STORE_LATENCY_BUCKETS = [
  1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

type Rpc = RpcStats & { migration?: MigrationStats };

interface Snapshot {
  status: StoreStatus;
  rpc: Rpc | null;
}

export function storeMetrics(store: StoreServer): Registry {
  const registry = new Registry();
  // The collects of one scrape share one snapshot: status() walks the table and asks the kernel for
  // resident pages. prom-client calls them all in one synchronous pass, so the snapshot is dropped in
  // the next microtask (not nextTick, which a chain of awaits never reaches): the next scrape, even one
  // awaited right after, reads afresh; were the collects ever spread out, each would just read its own.
  let snap: Snapshot | null = null;
  const read = (): Snapshot => {
    if (snap) return snap;
    // Puts that came by ring count once they are in: a scrape takes them in as any request would.
    store.rings.drainAll();
    const status = store.status();
    snap = { status, rpc: status.rpc as unknown as Rpc | null };
    queueMicrotask(() => {
      snap = null;
    });
    return snap;
  };

  const gauge = (name: string, help: string, value: (s: Snapshot) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value(read()));
      },
    });
  const counter = (name: string, help: string, value: (s: Snapshot) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(value(read()));
      },
    });

  new Gauge({
    name: 'trellis_store_info',
    help: 'Always 1; labels name the store (instance id, node name, protocol version)',
    labelNames: ['instance_id', 'name', 'protocol_version'],
    registers: [registry],
    collect() {
      const s = read().status;
      this.reset();
      this.set({ instance_id: String(s.instanceId), name: s.name, protocol_version: String(s.protocolVersion) }, 1);
    },
  });
  gauge('trellis_store_memory_used_bytes', 'Arena bytes allocated to blobs', (s) => s.status.memoryUsed);
  gauge('trellis_store_memory_limit_bytes', 'The arena limit (--size)', (s) => s.status.memoryLimit);
  gauge('trellis_store_memory_mapped_bytes', 'Bytes of shared-memory segments mapped', (s) => s.status.memoryMapped);
  gauge(
    'trellis_store_memory_resident_bytes',
    'Arena bytes resident in RAM (freed blocks go back to the OS after --punch-delay)',
    (s) => s.status.memoryResident,
  );
  gauge(
    'trellis_store_fragmentation_ratio',
    'Share of free arena memory outside the largest free block (0: none, near 1: badly fragmented)',
    (s) => s.status.fragmentation,
  );
  gauge('trellis_store_largest_block_bytes', 'The largest blob a create could get now', (s) => s.status.largestBlock);
  gauge('trellis_store_objects', 'Live objects (blobs not counted)', (s) => s.status.objects);
  gauge('trellis_store_blobs', 'Blobs in the table', (s) => s.status.blobs);
  gauge(
    'trellis_store_record_bytes',
    'Bytes of object metadata and member lists on the heap',
    (s) => s.status.records.bytes,
  );
  gauge(
    'trellis_store_record_limit_bytes',
    'The limit of trellis_store_record_bytes (--max-record-bytes)',
    (s) => s.status.records.limit,
  );
  gauge('trellis_store_spilled_objects', 'Blobs spilled to disk now', (s) => s.status.spill.objects);
  gauge('trellis_store_spilled_bytes', 'Bytes spilled to disk now', (s) => s.status.spill.bytes);
  counter(
    'trellis_store_spills_total',
    'Blobs written to the spill directory to make room',
    (s) => s.status.counters.spills ?? 0,
  );
  counter(
    'trellis_store_restores_total',
    'Spilled blobs read back into memory by a get',
    (s) => s.status.counters.restores ?? 0,
  );
  counter(
    'trellis_store_fast_gets_total',
    "Gets served by the fast path (no request: counted in the clients' pin pages); gets_total + this is every get",
    (s) => s.status.counters.fastGets ?? 0,
  );
  counter(
    'trellis_store_fast_deferrals_total',
    'Frees that waited for a fast-path pin to go',
    (s) => s.status.counters.fastDeferrals ?? 0,
  );
  gauge(
    'trellis_store_fast_deferred_objects',
    'Deleted objects waiting for a fast-path pin to go',
    (s) => s.status.counters.fastDeferred ?? 0,
  );
  gauge('trellis_store_names', 'Names bound (in this store’s view of the metadata)', (s) => s.status.names);
  new Gauge({
    name: 'trellis_store_connections',
    help: 'Connected clients and peers, by transport',
    labelNames: ['transport'],
    registers: [registry],
    collect() {
      const s = read();
      this.set({ transport: 'ipc' }, s.status.connections);
      this.set({ transport: 'rpc' }, s.rpc?.connections ?? 0);
    },
  });

  const traffic = (name: string, help: string, field: keyof KindCounts) =>
    new Counter({
      name,
      help,
      labelNames: ['transport', 'kind'],
      registers: [registry],
      collect() {
        read();
        this.reset();
        for (const transport of TRANSPORTS) {
          for (const [kind, c] of store.traffic.snapshot(transport)) this.inc({ transport, kind }, c[field]);
        }
      },
    });
  traffic('trellis_store_gets_total', 'Objects handed out by get, by transport and kind (typename)', 'gets');
  traffic(
    'trellis_store_get_bytes_total',
    'Bytes of the objects handed out by get (views over IPC, copies sent over RPC)',
    'getBytes',
  );
  traffic('trellis_store_puts_total', 'Objects created by clients (put, seal, make), by transport and kind', 'puts');
  traffic(
    'trellis_store_put_bytes_total',
    'Bytes of blob data clients brought with their puts (an object over existing members brings 0)',
    'putBytes',
  );

  const migration = (s: Snapshot) => s.rpc?.migration;
  counter(
    'trellis_store_migrations_total',
    'Objects migrated into this store from others',
    (s) => migration(s)?.migrations ?? 0,
  );
  counter(
    'trellis_store_migration_bytes_total',
    'Blob bytes received by migrations into this store',
    (s) => migration(s)?.bytesIn ?? 0,
  );
  counter(
    'trellis_store_migration_failures_total',
    'Migrations into this store that failed (nothing of them kept)',
    (s) => migration(s)?.failed ?? 0,
  );
  counter(
    'trellis_store_rpc_received_bytes_total',
    'Blob bytes received over RPC (remote puts)',
    (s) => s.rpc?.bytesIn ?? 0,
  );
  counter(
    'trellis_store_rpc_sent_bytes_total',
    'Blob bytes sent over RPC (remote gets and migrations out of this store)',
    (s) => s.rpc?.bytesOut ?? 0,
  );
  counter(
    'trellis_store_rpc_auth_failures_total',
    'RPC connections refused for a wrong or missing token',
    (s) => s.rpc?.authFailures ?? 0,
  );

  const latency = new Histogram({
    name: 'trellis_store_request_duration_seconds',
    help: 'Time the store takes to answer a request, by message type and transport (over RPC, get and put include the transfer)',
    labelNames: ['type', 'transport'],
    buckets: STORE_LATENCY_BUCKETS,
    registers: [registry],
  });
  // Children bound once per (transport, type): the protocol's message types are a fixed set.
  const children: Record<Transport, Map<string, Histogram.Internal<'type' | 'transport'>>> = {
    ipc: new Map(),
    rpc: new Map(),
  };
  store.traffic.timer = (type, transport, seconds) => {
    let child = children[transport].get(type);
    if (!child) {
      child = latency.labels({ type, transport });
      children[transport].set(type, child);
    }
    child.observe(seconds);
  };
  return registry;
}
