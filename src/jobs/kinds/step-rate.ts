/**
 * A training rank's step rate and the job's time to go, from the times its
 * recent steps ended. Timing from the start of the task made the first
 * reports' ETA wildly high: the first step carries the loader's start, the
 * ONNX session's first run and the wait for the last rank of the group to
 * arrive, seconds that later steps never pay again. So the rate counts only
 * the intervals between step ends (the first step's own time is not one),
 * over the last RATE_WINDOW steps so that it follows a rate that changes,
 * and no ETA is given until ETA_AFTER intervals have been timed.
 */

/** Step intervals the rate is taken over. */
export const RATE_WINDOW = 50;
/** Step intervals timed before an ETA is given. */
export const ETA_AFTER = 10;

export class StepRate {
  /** When each of the last RATE_WINDOW + 1 steps ended (ms, any monotonic clock). */
  private readonly ends: number[] = [];

  /** A step ended at `now`. */
  step(now: number): void {
    this.ends.push(now);
    if (this.ends.length > RATE_WINDOW + 1) this.ends.shift();
  }

  /** Steps a second over the window; undefined before two steps ended (or none took time). */
  perSecond(): number | undefined {
    const n = this.ends.length - 1;
    const span = n > 0 ? this.ends[n] - this.ends[0] : 0;
    return span > 0 ? (n * 1000) / span : undefined;
  }

  /** Milliseconds the `remaining` steps take at the window's rate: 0 when none remain, undefined while too few were timed. */
  etaMs(remaining: number): number | undefined {
    if (remaining <= 0) return 0;
    const rate = this.ends.length - 1 >= ETA_AFTER ? this.perSecond() : undefined;
    return rate === undefined ? undefined : (remaining * 1000) / rate;
  }
}
