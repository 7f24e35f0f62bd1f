import { readFileSync } from 'node:fs';

/** This process's memory from /proc/self/smaps_rollup, in bytes. */
export interface ProcMemory {
  rss: number;
  /** Anonymous pages: heap, copies. Shared-memory views do not count here. */
  anonymous: number;
  privateDirty: number;
  shared: number;
}

export function procMemory(): ProcMemory {
  const text = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return {
    rss: field('Rss'),
    anonymous: field('Anonymous'),
    privateDirty: field('Private_Dirty'),
    shared: field('Shared_Clean') + field('Shared_Dirty'),
  };
}
