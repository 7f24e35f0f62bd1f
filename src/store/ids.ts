/**
 * Object ids: "o" + 16 hex digits = 16 bits of instance id and 48 bits of a
 * per-store counter. The instance part keeps ids unique across a cluster once
 * instance ids come from the metadata service; a single node uses its own.
 * With a ledger (the spill directory's), the counter also goes on across
 * restarts: it starts above the last run's high-water mark, which is recorded
 * a block ahead, so the ledger is written once per ID_BLOCK ids.
 */
export interface IdLedger {
  /** Highest counter value a previous run may have used (0: none). */
  readonly floor: number;
  /** Records that counters up to `upTo` may be used; throws if it cannot. */
  reserve(upTo: number): void;
}

export const ID_BLOCK = 65_536;

export class IdAllocator {
  private next: number;
  private reserved: number;
  private readonly prefix: string;

  constructor(
    instanceId: number,
    private readonly ledger: IdLedger | null = null,
  ) {
    this.prefix = `o${(instanceId & 0xffff).toString(16).padStart(4, '0')}`;
    this.next = (ledger?.floor ?? 0) + 1;
    this.reserved = ledger ? this.next - 1 : Number.POSITIVE_INFINITY;
  }

  allocate(): string {
    return this.idOf(this.allocateBlock(1));
  }

  /** `count` consecutive counters, for a client's put ring to use in order; returns the first. */
  allocateBlock(count: number): number {
    const n = this.next;
    const last = n + count - 1;
    if (last > this.reserved) {
      const upTo = n - 1 + Math.max(ID_BLOCK, count);
      this.ledger!.reserve(upTo);
      this.reserved = upTo;
    }
    this.next = last + 1;
    return n;
  }

  /** The id of counter `n`. */
  idOf(n: number): string {
    return this.prefix + n.toString(16).padStart(12, '0');
  }
}
