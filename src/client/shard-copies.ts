/**
 * Which copy of a located shard to read: a shard of a replicated dataset has
 * several (locate lists them all, primary first), and readers must agree on
 * one so that each shard is read once, by the store that serves it.
 */
import type { LiveCopy, ShardLocation } from '../protocol/records.js';

/** The copy that serves a shard: the first live one (the primary while its store lives). */
export function servingCopy(shard: ShardLocation): LiveCopy | undefined {
  return shard.replicas.find((c) => c.alive);
}

/** The live copy of a shard held by store `instanceId`, if it holds one. */
export function copyOn(shard: ShardLocation, instanceId: number): LiveCopy | undefined {
  return shard.replicas.find((c) => c.alive && c.instanceId === instanceId);
}
