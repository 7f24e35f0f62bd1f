/**
 * The records that travel in answers, shared by both ends: the store builds
 * them, the clients check and return them, the metadata service stores some.
 * One object has one header (id, typename, nbytes, meta); what differs is how
 * its members are given and what else is known about it, so there is one
 * interface per view: a tree (get), a local listing (list), a cluster-wide
 * record (persist, listGlobal).
 */

/** Where a blob's bytes live: segment id, byte offset and length. */
export interface BlobLocation {
  seg: number;
  off: number;
  size: number;
}

export interface SegmentInfo {
  id: number;
  size: number;
}

/** What a client asks the store to record for a new object. */
export interface ObjectSpec {
  typename: string;
  meta: Record<string, unknown>;
  /** ids of member objects (blobs or other objects), in order. */
  members: string[];
  /** Bytes of `meta` as the request decoder measured them (absent: measured by the store). */
  metaBytes?: number;
}

/** What every view of an object has. */
export interface ObjectHeader {
  id: string;
  typename: string;
  nbytes: number;
  meta: Record<string, unknown>;
}

/** An object as `get` returns it: the whole tree; over IPC Blob records carry their location. */
export interface ObjectRecord extends ObjectHeader {
  members: ObjectRecord[];
  blob?: BlobLocation;
}

/** An object in a store's `list`: members by id, and its state in that store. */
export interface ObjectSummary extends ObjectHeader {
  members: string[];
  /** A blob whose bytes are in the spill directory now. */
  spilled: boolean;
  /** Client references (pins) on it. */
  references: number;
}

/** A persisted object's record in the metadata service: enough to find it and to know its shape. */
export interface GlobalObject extends ObjectHeader {
  members: string[];
  /** The instance that holds the bytes (for a global composite: the one that created it). */
  instanceId: number;
  /** A composite whose members may live on any instance (datasets); it has no bytes of its own. */
  global: boolean;
  persistedAt: number;
}

/** A persisted object as `listGlobal` answers it: with whether its store is alive. */
export type GlobalObjectInfo = GlobalObject & { alive: boolean };

export interface RpcEndpoint {
  host: string;
  port: number;
}

export interface InstanceInfo {
  instanceId: number;
  name: string;
  hostname: string;
  pid: number;
  /** Random id of this store run. */
  storeId: string;
  rpc: RpcEndpoint | null;
  memoryUsed: number;
  memoryLimit: number;
  startedAt: number;
  updatedAt: number;
}

export interface ShardLocation {
  id: string;
  typename: string;
  nbytes: number;
  /** The instance of the object's own record (the primary copy) and whether it is alive. */
  instanceId: number;
  alive: boolean;
  /** Every copy, primary included (an unreplicated object: just the primary), with its liveness. */
  replicas: LiveCopy[];
}

/** One full, sealed copy of a replicated object: its id in the store that holds it. */
export interface ReplicaCopy {
  id: string;
  instanceId: number;
}

export type LiveCopy = ReplicaCopy & { alive: boolean };

/**
 * The copies of a replicated object, kept next to its record in the metadata
 * service under the object's own id (the id datasets and names refer to).
 * `copies` lists the primary first while it lives; repair replaces copies on
 * stores that are gone.
 */
export interface ReplicaSet {
  id: string;
  /** How many live copies the object should have. */
  factor: number;
  nbytes: number;
  copies: ReplicaCopy[];
  /** When the set last changed (ms since the epoch): repair leaves a set that is being filled to its creator. */
  updatedAt: number;
}

/** What a store's status shows of replication and repair (docs/OPERATIONS.md). */
export interface RepairStatus {
  /** This store holds the repair lock (one repairer at a time, cluster-wide). */
  leader: boolean;
  /** Replicated objects with fewer live copies than their factor but at least one, at the last scan. */
  underReplicated: number;
  /** Replicated objects with no live copy left, at the last scan. */
  lost: number;
  /** Bytes of the copies being made now by this store's repairer. */
  bytesRepairing: number;
  /** Bytes copied by this store's repairer since start. */
  bytesRepaired: number;
  /** Copies this store's repairer made since start. */
  copiesMade: number;
  /** The repair rate limit, bytes per second. */
  rateBytesPerSec: number;
  /** Replica copies this store holds now. */
  replicasHere: number;
  /** The latest copies this store's repairer started (at most 64), oldest first: when, which object, how many bytes. */
  recent: { startedAt: number; id: string; bytes: number }[];
}

export interface InstanceShare {
  instanceId: number;
  name: string;
  hostname: string;
  rpc: RpcEndpoint | null;
  alive: boolean;
  shards: string[];
  bytes: number;
}

/** Where an object's data lives: per shard, and summed per instance (the scheduler's input). */
export interface Locations {
  id: string;
  typename: string;
  nbytes: number;
  shards: ShardLocation[];
  instances: InstanceShare[];
}

/** A store's `status` (docs/OPERATIONS.md describes the fields). */
export interface StoreStatus {
  instanceId: number;
  storeId: string;
  name: string;
  hostname: string;
  pid: number;
  socket: string;
  protocolVersion: number;
  memoryUsed: number;
  memoryLimit: number;
  memoryMapped: number;
  memoryResident: number;
  reserved: boolean;
  /** hugePages: the segment is on 2 MiB huge pages (a store started with --reserve --huge-pages). */
  segments: { id: number; size: number; used: number; freeBlocks: number; hugePages: boolean }[];
  fragmentation: number;
  /** The largest blob a create could get now (in a segment, or a new one). */
  largestBlock: number;
  objects: number;
  blobs: number;
  entries: number;
  names: number;
  connections: number;
  nameWaiters: number;
  /** Store-local tags bound now (src/store/tags.ts), and RPC reads waiting for a tag. */
  tags: number;
  tagWaiters: number;
  spill: { dir: string | null; objects: number; bytes: number };
  /** Bytes of object records outside the arena (metadata and member lists) and their limit. */
  records: { bytes: number; limit: number };
  counters: Record<string, number>;
  /** Replication and repair as this store sees them. */
  repair: RepairStatus;
  meta: Record<string, unknown>;
  rpc: (RpcEndpoint & Record<string, unknown>) | null;
  uptimeMs: number;
}

/**
 * A names listing as it travels (name → id), built on an object without a
 * prototype: names are clients' strings, and on a plain object `__proto__`
 * would set the prototype instead of a key and vanish from the listing.
 */
export function nameListing(entries: Iterable<readonly [string, string]>): Record<string, string> {
  const out = Object.create(null) as Record<string, string>;
  for (const [name, id] of entries) out[name] = id;
  return out;
}
