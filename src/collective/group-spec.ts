/**
 * A collective group as its ranks describe it: who is in it, on which store,
 * how large the buffer is; checked once at open, and the layout every rank
 * derives from it the same way (chunk bounds, tags).
 */
import { invalidParameter } from '../errors.js';

export interface GroupMember {
  rank: number;
  /** The store the rank runs beside: its instance id (decimal, as etcd assigns it) or its storeId. */
  instance: string;
}

export interface GroupSpec {
  /**
   * Unique per job attempt (e.g. `${jobId}/${attempt}`): a restarted group never meets an old one's
   * objects, and a rank's tag scope stays ended in its store once the rank closed or died, so a name
   * is opened once.
   */
  group: string;
  rank: number;
  ranks: number;
  /** Elements (float32) of every buffer exchanged. */
  size: number;
  members: GroupMember[];
}

/** Chunks start on 16-float (64-byte) boundaries: every rank's piece is cache-line and arena aligned. */
const CHUNK_ALIGN = 16;
/** Ranks one group may have (a tag's reads are counted in 16 bits). */
export const MAX_RANKS = 1024;
/** Largest buffer: one blob (4 GiB) of float32. */
const MAX_SIZE = 2 ** 30 - CHUNK_ALIGN;

export function checkGroupSpec(spec: GroupSpec): GroupSpec {
  if (spec === null || typeof spec !== 'object') throw invalidParameter('spec', 'a group spec', spec);
  const { group, rank, ranks, size, members } = spec;
  if (typeof group !== 'string' || group.length === 0 || group.length > 512 || group.includes('#')) {
    throw invalidParameter('spec.group', "a string of 1 to 512 characters without '#'", group);
  }
  if (!Number.isInteger(ranks) || ranks < 1 || ranks > MAX_RANKS) {
    throw invalidParameter('spec.ranks', `an integer in [1, ${MAX_RANKS}]`, ranks);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= ranks) {
    throw invalidParameter('spec.rank', `an integer in [0, ${ranks - 1}]`, rank);
  }
  if (!Number.isInteger(size) || size < 1 || size > MAX_SIZE) {
    throw invalidParameter('spec.size', `a number of float32 elements in [1, ${MAX_SIZE}]`, size);
  }
  if (!Array.isArray(members) || members.length !== ranks) {
    throw invalidParameter('spec.members', `an array of ${ranks} members, one per rank`, members);
  }
  const seen = new Set<number>();
  for (const m of members) {
    if (!Number.isInteger(m?.rank) || m.rank < 0 || m.rank >= ranks || seen.has(m.rank)) {
      throw invalidParameter('spec.members[].rank', `each rank of [0, ${ranks - 1}] once`, m?.rank);
    }
    if (typeof m.instance !== 'string' || m.instance.length === 0) {
      throw invalidParameter('spec.members[].instance', 'a store instance id or storeId', m.instance);
    }
    seen.add(m.rank);
  }
  return {
    group,
    rank,
    ranks,
    size,
    members: [...members].sort((a, b) => a.rank - b.rank).map((m) => ({ rank: m.rank, instance: m.instance })),
  };
}

/** [start, end) in elements of rank k's chunk: what it reduces in a reduce-scatter. */
export function chunkOf(size: number, ranks: number, k: number): [number, number] {
  const per = Math.ceil(size / ranks / CHUNK_ALIGN) * CHUNK_ALIGN;
  return [Math.min(k * per, size), Math.min((k + 1) * per, size)];
}

/** What a rank publishes at a step: its gradients, its reduced chunk (or the sum), a broadcast. */
export type Piece = 'grad' | 'sum' | 'bcast' | 'ack';

/** A rank's tag scope in its store (src/store/tags.ts): what comes before the tag's last '#'. */
export function scopeOfRank(group: string, rank: number): string {
  return `${group}/${rank}`;
}

/** The tag of a rank's piece of a step, in its own store: the rank's scope, then the step. */
export function tagOf(group: string, rank: number, step: number, piece: Piece): string {
  return `${scopeOfRank(group, rank)}#${step}/${piece}`;
}
