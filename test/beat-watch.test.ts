/**
 * BeatWatch's judgement of heartbeats, each in its agent's own period (the
 * clock is passed in: no waiting). train-restart.test.ts runs it against
 * real agents beating every 6 s.
 */
import { describe, expect, it } from 'vitest';
import { BeatWatch, type Suspects } from '../dist/src/jobs/beat-watch.js';
import type { NodeBeat } from '../dist/src/jobs/job-store.js';

const beat = (name: string, at: number, beatMs?: number): NodeBeat => ({
  name,
  instanceId: 1,
  storeId: 's',
  concurrency: 2,
  handlers: [],
  pid: 1,
  at,
  ...(beatMs === undefined ? {} : { beatMs }),
});

describe('BeatWatch', () => {
  it('a node is fresh for 3 of its own periods after its heartbeat last changed', () => {
    const w = new BeatWatch();
    w.observe([beat('slow', 1, 6000), beat('old', 1)], 0);
    w.observe([beat('slow', 1, 6000), beat('old', 1)], 10_000);
    expect([w.fresh('slow', 18_000), w.fresh('slow', 18_001)]).toEqual([true, false]);
    // An agent that publishes no period beats every second.
    expect([w.fresh('old', 3000), w.fresh('old', 3001)]).toEqual([true, false]);
    // A change restarts the count; a node never seen is fresh.
    w.observe([beat('old', 2)], 3500);
    expect([w.fresh('old', 6500), w.fresh('new', 99_999)]).toEqual([true, true]);
  });

  it("a restart's suspect is alive once it beats again, gone after 2 periods without, or when its key is gone", () => {
    const w = new BeatWatch();
    const s: Suspects = {
      since: 1000,
      at: new Map([
        ['a', 5],
        ['b', 5],
        ['c', 5],
      ]),
    };
    const live = [beat('a', 6, 6000), beat('b', 5, 6000)];
    expect(['a', 'b', 'c', 'd'].map((n) => w.verdict(n, s, live, 13_000))).toEqual([
      'alive',
      'pending',
      'gone',
      'gone',
    ]);
    expect(w.verdict('b', s, live, 13_001)).toBe('gone');
  });
});
