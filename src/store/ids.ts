/**
 * Object ids: "o" + 16 hex digits = 16 bits of instance id and 48 bits of a
 * per-store counter. The instance part keeps ids unique across a cluster once
 * instance ids come from the metadata service; a single node uses its own.
 */
export class IdAllocator {
  private next = 1;
  private readonly prefix: string;

  constructor(instanceId: number) {
    this.prefix = `o${(instanceId & 0xffff).toString(16).padStart(4, '0')}`;
  }

  allocate(): string {
    const n = this.next++;
    return this.prefix + n.toString(16).padStart(12, '0');
  }
}
