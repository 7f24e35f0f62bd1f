/**
 * The train runner's step rate and ETA (src/jobs/kinds/step-rate.ts), on a
 * clock the test drives: the first step's warm-up does not count, no ETA
 * before 10 timed intervals, and the rate follows the last 50 steps.
 * kinds-train.test.ts checks the reports of a real training run.
 */
import { describe, expect, it } from 'vitest';
import { ETA_AFTER, RATE_WINDOW, StepRate } from '../dist/src/jobs/kinds/step-rate.js';

/** `count` steps ending `every` ms apart after `t`; answers the last one's time. */
function steps(r: StepRate, t: number, count: number, every: number): number {
  for (let i = 1; i <= count; i++) r.step(t + i * every);
  return t + count * every;
}

describe('StepRate', () => {
  it('gives no ETA until enough steps are timed, and leaves the first step’s warm-up out', () => {
    const r = new StepRate();
    expect([r.perSecond(), r.etaMs(100)]).toEqual([undefined, undefined]);
    // The first step ends 5 s into the task (loader start, first session run, waiting for peers).
    r.step(5000);
    expect([r.perSecond(), r.etaMs(100)]).toEqual([undefined, undefined]);
    const t = steps(r, 5000, ETA_AFTER - 1, 10);
    expect([r.perSecond(), r.etaMs(100)]).toEqual([100, undefined]);
    steps(r, t, 1, 10);
    // 10 ms a step from here: 100 steps to go take 1 s (timing from the start would say ~5.5 s).
    expect([r.perSecond(), r.etaMs(100)]).toEqual([100, 1000]);
    expect(r.etaMs(0)).toBe(0);
  });

  it('follows a rate that changes: over the last 50 steps only', () => {
    const r = new StepRate();
    r.step(0);
    let t = steps(r, 0, 200, 10);
    expect(r.etaMs(10)).toBe(100);
    // Steps slow to 40 ms: half the window in, the mean is 25 ms; a whole window in, 40 ms.
    t = steps(r, t, RATE_WINDOW / 2, 40);
    expect(r.etaMs(10)).toBe(250);
    steps(r, t, RATE_WINDOW / 2, 40);
    expect(r.etaMs(10)).toBe(400);
  });
});
