/** Per-class pixel sums and means: the readers' work in the demo. */
export class ClassMeans {
  readonly sums = new Float64Array(10 * 784);
  readonly counts = new Array<number>(10).fill(0);

  /** Adds `count` images [count, 784] with their labels. */
  add(images: Uint8Array, labels: Uint8Array, count: number): void {
    const sums = this.sums;
    for (let n = 0; n < count; n++) {
      const c = labels[n];
      this.counts[c]++;
      const off = c * 784;
      const base = n * 784;
      for (let i = 0; i < 784; i++) sums[off + i] += images[base + i];
    }
  }

  /** Mean intensity per class. */
  overall(): number[] {
    const out: number[] = [];
    for (let c = 0; c < 10; c++) {
      let t = 0;
      for (let i = 0; i < 784; i++) t += this.sums[c * 784 + i];
      out.push(t / 784 / Math.max(1, this.counts[c]));
    }
    return out;
  }

  /** A short digest so results from different readers can be compared exactly. */
  digest(): string {
    let h = 0x811c9dc5;
    for (let i = 0; i < this.sums.length; i++) {
      h ^= this.sums[i] & 0xffffffff;
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h.toString(16).padStart(8, '0');
  }
}
