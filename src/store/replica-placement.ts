/**
 * Placement of new replica copies, for one `ensure` or one repair pass.
 */
import type { InstanceInfo } from '../protocol/records.js';

/**
 * Where new copies go: live stores serving RPC, most free memory first, by
 * the figures they published, less what this placement already put there
 * (so copies made at once spread instead of all choosing the same store).
 */
export class Placement {
  private readonly planned = new Map<number, number>();
  /** Object id → stores this placement already sent a copy of it to (copies made at once must differ). */
  private readonly assigned = new Map<string, Set<number>>();

  constructor(private readonly instances: InstanceInfo[]) {}

  private free(i: InstanceInfo): number {
    return i.memoryLimit - i.memoryUsed - (this.planned.get(i.instanceId) ?? 0);
  }

  /**
   * The store with the most room for a copy of object `id` (`nbytes`) among
   * those not in `exclude` and not given a copy of it already, counted as
   * taking it.
   */
  take(id: string, nbytes: number, exclude: ReadonlySet<number>): InstanceInfo | undefined {
    const mine = this.assigned.get(id) ?? new Set<number>();
    let best: InstanceInfo | undefined;
    for (const i of this.instances) {
      if (exclude.has(i.instanceId) || mine.has(i.instanceId) || !i.rpc || this.free(i) < nbytes) continue;
      if (!best || this.free(i) > this.free(best)) best = i;
    }
    if (!best) return undefined;
    this.planned.set(best.instanceId, (this.planned.get(best.instanceId) ?? 0) + nbytes);
    mine.add(best.instanceId);
    this.assigned.set(id, mine);
    return best;
  }

  /** Gives back what `take` counted on a store that did not make the copy (it is not asked again). */
  release(_id: string, instanceId: number, nbytes: number): void {
    this.planned.set(instanceId, (this.planned.get(instanceId) ?? 0) - nbytes);
  }
}
