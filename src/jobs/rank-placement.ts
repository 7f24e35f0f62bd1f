/**
 * Where the ranks of a data-parallel train job run and which shards each
 * reads. Pure: the scheduler hands it the shards (size and holders) and the
 * live nodes, and records what it answers as the job's placement.
 *
 * The rule, in order:
 *   1. ranks go to live nodes in proportion to the bytes each holds (largest
 *      remainder; ties to the node listed first), so a rank sits where its
 *      shards are;
 *   2. each node's shards are dealt to its ranks largest first, each to the
 *      rank with the fewest bytes so far (LPT), so rows stay balanced without
 *      moving anything;
 *   3. shards no live node holds (their node's agent is gone) are dealt the
 *      same way over every rank: those bytes are moved;
 *   4. while moving one shard from the fullest rank to the emptiest lowers
 *      the spread by more than BALANCE_SLACK of a rank's fair share, it moves:
 *      a rank that must read 30 % more than the others makes every step wait
 *      for it, which costs more than copying a shard once.
 * Bytes stand for rows: the shards of a dataset share one row layout.
 */

/** A shard as placement sees it: its size and the live nodes holding a copy. */
export interface PlacementShard {
  id: string;
  nbytes: number;
  holders: string[];
}

export interface RankAssignment {
  rank: number;
  node: string;
  /** Shard ids in dataset order. */
  shards: string[];
  bytes: number;
  /** Of which held by `node` already. */
  bytesLocal: number;
  /** Of which its agent migrates first. */
  bytesMoved: number;
}

/** Imbalance (fullest minus emptiest rank) that placement accepts rather than moving a shard. */
export const BALANCE_SLACK = 0.1;

/**
 * The live nodes that hold a copy of a shard, from the store instances that
 * hold a live copy (replicas included, primary first), each node once. The
 * one place that answers it, for tasks and ranks alike.
 */
export function shardHolders(instanceIds: readonly number[], nodeOfInstance: ReadonlyMap<number, string>): string[] {
  const out: string[] = [];
  for (const i of instanceIds) {
    const node = nodeOfInstance.get(i);
    if (node !== undefined && !out.includes(node)) out.push(node);
  }
  return out;
}

/** Default rank count: one per live node holding shards (at least one). */
export function defaultRanks(shards: PlacementShard[]): number {
  return Math.max(1, new Set(shards.flatMap((s) => s.holders.slice(0, 1))).size);
}

export function placeRanks(shards: PlacementShard[], ranks: number, liveNodes: string[]): RankAssignment[] {
  if (liveNodes.length === 0) return [];
  const live = new Set(liveNodes);
  const held = new Map<string, number>();
  const home = new Map<string, string>(); // shard -> the live holder it counts for
  for (const s of shards) {
    const h = s.holders.find((n) => live.has(n));
    if (h === undefined) continue;
    home.set(s.id, h);
    held.set(h, (held.get(h) ?? 0) + s.nbytes);
  }
  const rankNodes = apportion(ranks, liveNodes, held);
  const out: RankAssignment[] = rankNodes.map((node, rank) => ({
    rank,
    node,
    shards: [],
    bytes: 0,
    bytesLocal: 0,
    bytesMoved: 0,
  }));
  const order = new Map(shards.map((s, i) => [s.id, i]));
  const bySize = [...shards].sort((a, b) => b.nbytes - a.nbytes || order.get(a.id)! - order.get(b.id)!);
  const lightest = (list: RankAssignment[]) => list.reduce((a, b) => (b.bytes < a.bytes ? b : a));
  for (const s of bySize) {
    const h = home.get(s.id);
    const mine = h === undefined ? [] : out.filter((r) => r.node === h);
    // A holder without a rank (more holders than ranks) hands its shard to any rank: moved.
    give(lightest(mine.length ? mine : out), s);
  }
  balance(out, shards);
  for (const r of out) r.shards.sort((a, b) => order.get(a)! - order.get(b)!);
  return out;

  function give(r: RankAssignment, s: PlacementShard): void {
    r.shards.push(s.id);
    r.bytes += s.nbytes;
    if (s.holders.includes(r.node)) r.bytesLocal += s.nbytes;
    else r.bytesMoved += s.nbytes;
  }
}

/** Ranks per node: proportional to bytes held, largest remainder; nodes holding nothing only when all hold nothing. */
function apportion(ranks: number, nodes: string[], held: Map<string, number>): string[] {
  const total = [...held.values()].reduce((a, b) => a + b, 0);
  const weight = (n: string) => (total > 0 ? (held.get(n) ?? 0) / total : 1 / nodes.length);
  const quota = nodes.map((n) => ({ n, q: ranks * weight(n) }));
  const count = new Map(quota.map(({ n, q }) => [n, Math.floor(q)]));
  let left = ranks - [...count.values()].reduce((a, b) => a + b, 0);
  const byRemainder = [...quota].sort((a, b) => b.q - Math.floor(b.q) - (a.q - Math.floor(a.q)));
  for (const { n } of byRemainder) {
    if (left === 0) break;
    count.set(n, count.get(n)! + 1);
    left--;
  }
  return nodes.flatMap((n) => new Array<string>(count.get(n)!).fill(n));
}

/** Moves shards from the fullest to the emptiest rank while that narrows the spread beyond the slack. */
function balance(out: RankAssignment[], shards: PlacementShard[]): void {
  if (out.length < 2) return;
  const size = new Map(shards.map((s) => [s.id, s]));
  const fair = out.reduce((a, r) => a + r.bytes, 0) / out.length;
  for (let guard = 0; guard < shards.length; guard++) {
    const hi = out.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    const lo = out.reduce((a, b) => (b.bytes < a.bytes ? b : a));
    const spread = hi.bytes - lo.bytes;
    if (spread <= BALANCE_SLACK * fair) return;
    // The shard whose move narrows the spread most; never one that widens it.
    let pick: PlacementShard | undefined;
    let best = spread;
    for (const id of hi.shards) {
      const s = size.get(id)!;
      const after = Math.abs(hi.bytes - s.nbytes - (lo.bytes + s.nbytes));
      if (after < best) {
        best = after;
        pick = s;
      }
    }
    if (!pick || spread - best <= BALANCE_SLACK * fair * 0.5) return;
    hi.shards.splice(hi.shards.indexOf(pick.id), 1);
    hi.bytes -= pick.nbytes;
    if (pick.holders.includes(hi.node)) hi.bytesLocal -= pick.nbytes;
    else hi.bytesMoved -= pick.nbytes;
    lo.shards.push(pick.id);
    lo.bytes += pick.nbytes;
    if (pick.holders.includes(lo.node)) lo.bytesLocal += pick.nbytes;
    else lo.bytesMoved += pick.nbytes;
  }
}

/** One line per rank for the task's placement reason. */
export function describeRank(r: RankAssignment, ranks: number, fmt: (n: number) => string): string {
  const moved = r.bytesMoved > 0 ? `, ${fmt(r.bytesMoved)} moved here first` : '';
  return (
    `rank ${r.rank} of ${ranks} on ${r.node}: ${r.shards.length} shards, ${fmt(r.bytes)} ` +
    `(${fmt(r.bytesLocal)} local${moved})`
  );
}
