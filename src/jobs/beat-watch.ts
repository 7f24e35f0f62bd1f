/**
 * What the scheduler knows about the agents' heartbeats, in each agent's own
 * period (an agent publishes its beatMs in its heartbeat; its key lives 5
 * periods). Two questions:
 *
 *   - is a node fresh: its heartbeat changed within STALE_BEATS of its
 *     periods (by our clock: agents' clocks are not compared with ours);
 *   - after a group restart, is the node of a rank that did not report the
 *     failure itself alive: a rank's peers notice its death in milliseconds
 *     (their exchange aborts), seconds before its agent's key expires, and a
 *     group placed on the dead node at once would have to restart again. Its
 *     agent is alive once its heartbeat changes after the restart; it is
 *     taken for dead once SUSPECT_BEATS of its periods pass without a change.
 *     A live agent beats every period, so a live node is back within one,
 *     and a dead one is left out after two, whatever the period.
 */
import type { NodeBeat } from './job-store.js';

/** The period of an agent that does not publish one (agents before beatMs was in the heartbeat). */
export const DEFAULT_BEAT_MS = 1000;
/** Periods without a change after which a node gets no new work (its key expires after 5). */
export const STALE_BEATS = 3;
/** Periods after a restart within which a suspect node's agent must beat to be used again. */
export const SUSPECT_BEATS = 2;

export const periodOf = (b: Pick<NodeBeat, 'beatMs'>): number =>
  Number.isSafeInteger(b.beatMs) && (b.beatMs as number) > 0 ? (b.beatMs as number) : DEFAULT_BEAT_MS;

/** A restart's view of the nodes whose agents did not report: their heartbeat's `at` when it happened. */
export interface Suspects {
  /** Our clock at the restart. */
  since: number;
  /** Node → its heartbeat's `at` at the restart (absent from Redis: gone already). */
  at: Map<string, number>;
}

export type SuspectVerdict = 'alive' | 'gone' | 'pending';

export class BeatWatch {
  /** Per node: its heartbeat's last `at`, when (our clock) it last changed, and its period. */
  private readonly beats = new Map<string, { at: number; seen: number; periodMs: number }>();

  /** Records a tick's read of the live heartbeats. */
  observe(nodes: readonly NodeBeat[], now: number): void {
    for (const b of nodes) {
      const seen = this.beats.get(b.name);
      const periodMs = periodOf(b);
      if (!seen || seen.at !== b.at) this.beats.set(b.name, { at: b.at, seen: now, periodMs });
    }
  }

  /** True while the node's heartbeat changed within STALE_BEATS of its periods (a node seen first is fresh). */
  fresh(node: string, now: number): boolean {
    const b = this.beats.get(node);
    return !b || now - b.seen <= STALE_BEATS * b.periodMs;
  }

  /** What the heartbeats say now of a restart's suspect: alive (beat since), gone, or not known yet. */
  verdict(node: string, s: Suspects, live: readonly NodeBeat[], now: number): SuspectVerdict {
    const b = live.find((x) => x.name === node);
    const before = s.at.get(node);
    if (!b || before === undefined) return 'gone';
    if (b.at !== before) return 'alive';
    return now - s.since > SUSPECT_BEATS * periodOf(b) ? 'gone' : 'pending';
  }
}
