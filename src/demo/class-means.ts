/** Per-class mean pixel images: the readers' work in the first demo. */
export interface ClassMeans {
  counts: number[];
  /** [10][784] means */
  means: Float64Array;
  /** Mean intensity per class, for a short printout. */
  overall: number[];
}

export function classMeans(images: Uint8Array, labels: Uint8Array, count: number): ClassMeans {
  const sums = new Float64Array(10 * 784);
  const counts = new Array<number>(10).fill(0);
  for (let n = 0; n < count; n++) {
    const c = labels[n];
    counts[c]++;
    const off = c * 784;
    const base = n * 784;
    for (let i = 0; i < 784; i++) sums[off + i] += images[base + i];
  }
  const overall: number[] = [];
  for (let c = 0; c < 10; c++) {
    let t = 0;
    for (let i = 0; i < 784; i++) {
      sums[c * 784 + i] /= Math.max(1, counts[c]);
      t += sums[c * 784 + i];
    }
    overall.push(t / 784);
  }
  return { counts, means: sums, overall };
}

/** A short digest so results from different readers can be compared exactly. */
export function digestMeans(m: ClassMeans): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < m.means.length; i++) {
    h ^= Math.round(m.means[i] * 1e6) & 0xffffffff;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}
