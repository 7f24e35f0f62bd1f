/**
 * Rank placement as a pure function: ranks where the bytes are, shards
 * dealt to the ranks beside them, shards of a node without an agent moved to
 * the lightest ranks, and imbalance corrected only when it is worth a move.
 */
import { describe, expect, it } from 'vitest';
import { defaultRanks, placeRanks, shardHolders } from '../dist/src/jobs/rank-placement.js';

const shard = (id: string, nbytes: number, node?: string) => ({ id, nbytes, holders: node ? [node] : [] });

describe('rank placement', () => {
  it('one rank per node holding shards, each on its own shards, nothing moved', () => {
    const shards = [shard('a', 10, 'n0'), shard('b', 10, 'n1'), shard('c', 10, 'n2'), shard('d', 10, 'n0')];
    expect(defaultRanks(shards)).toBe(3);
    expect(placeRanks(shards, 3, ['n0', 'n1', 'n2'])).toEqual([
      { rank: 0, node: 'n0', shards: ['a', 'd'], bytes: 20, bytesLocal: 20, bytesMoved: 0 },
      { rank: 1, node: 'n1', shards: ['b'], bytes: 10, bytesLocal: 10, bytesMoved: 0 },
      { rank: 2, node: 'n2', shards: ['c'], bytes: 10, bytesLocal: 10, bytesMoved: 0 },
    ]);
  });

  it('more ranks than nodes: ranks in proportion to bytes held, shards split among a node’s ranks', () => {
    const shards = ['a', 'b', 'c', 'd']
      .map((id) => shard(id, 10, 'n0'))
      .concat([shard('e', 10, 'n1'), shard('f', 10, 'n1')]);
    expect(placeRanks(shards, 3, ['n0', 'n1'])).toEqual([
      { rank: 0, node: 'n0', shards: ['a', 'c'], bytes: 20, bytesLocal: 20, bytesMoved: 0 },
      { rank: 1, node: 'n0', shards: ['b', 'd'], bytes: 20, bytesLocal: 20, bytesMoved: 0 },
      { rank: 2, node: 'n1', shards: ['e', 'f'], bytes: 20, bytesLocal: 20, bytesMoved: 0 },
    ]);
  });

  it('the shards of a node without a live agent go to the lightest ranks and count as moved', () => {
    const shards = [shard('a', 10, 'n0'), shard('b', 10, 'n1'), shard('c', 10, 'n2'), shard('d', 10, 'n2')];
    expect(placeRanks(shards, 2, ['n0', 'n1'])).toEqual([
      { rank: 0, node: 'n0', shards: ['a', 'c'], bytes: 20, bytesLocal: 10, bytesMoved: 10 },
      { rank: 1, node: 'n1', shards: ['b', 'd'], bytes: 20, bytesLocal: 10, bytesMoved: 10 },
    ]);
  });

  it('a rank far heavier than another gives up a shard; a small imbalance stays local', () => {
    const skewed = [shard('a', 20, 'n0'), shard('b', 10, 'n0'), shard('c', 10, 'n0')];
    skewed.push(shard('d', 10, 'n1'), shard('e', 10, 'n1'));
    // One rank per node (40 vs 20 bytes held); one 10-byte shard moving evens them at 30.
    expect(placeRanks(skewed, 2, ['n0', 'n1'])).toEqual([
      { rank: 0, node: 'n0', shards: ['a', 'c'], bytes: 30, bytesLocal: 30, bytesMoved: 0 },
      { rank: 1, node: 'n1', shards: ['b', 'd', 'e'], bytes: 30, bytesLocal: 20, bytesMoved: 10 },
    ]);
    const close = [shard('a', 11, 'n0'), shard('b', 10, 'n1')];
    expect(placeRanks(close, 2, ['n0', 'n1']).map((r) => r.bytesMoved)).toEqual([0, 0]);
  });

  it('holders come from one lookup: the live nodes of the instances holding a live copy, primary first', () => {
    const nodes = new Map([
      [1, 'n0'],
      [2, 'n1'],
      [3, 'n2'],
    ]);
    expect(shardHolders([2], nodes)).toEqual(['n1']);
    expect(shardHolders([7], nodes)).toEqual([]);
    // A replicated shard: every copy's node, the primary's first; an instance with no live agent is no holder.
    expect(shardHolders([3, 7, 1], nodes)).toEqual(['n2', 'n0']);
  });
});
