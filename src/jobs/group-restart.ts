/**
 * Which failures of a rank mean "the group lost a member" — its agent, host
 * process or node went away, or a peer stopped answering — and so restart
 * the group from its checkpoint, rather than fail the job: a restart cannot
 * fix bad data or a bad spec, but it can route around a dead node.
 */

/** Group restarts a train job allows when its spec does not say (spec.maxRestarts). */
export const MAX_RESTARTS_DEFAULT = 3;

const LOST: ReadonlySet<string> = new Set([
  'ERR_DISCONNECTED', // a peer's store or our own connection went away mid-exchange
  'ERR_TIMEOUT', // a peer stopped answering (the collective's own deadline)
  'ERR_WORKER_FAILED', // the rank's task host died, or BullMQ gave up on a stalled rank
  'ERR_SHUTTING_DOWN', // its agent or store is draining
  'ERR_CLOSED',
  'ERR_OBJECT_LOST', // a store holding the rank's shards or the checkpoint left the cluster
  'ERR_META_UNAVAILABLE',
  'ERR_RANK_LOST',
  'ERR_COLLECTIVE_ABORTED', // the group's exchange broke: a peer or its store failed, closed or timed out
  'ERR_CANCELLED', // a rank stopped by its agent (not by a job cancel, which ends the job first)
]);

/** True when a rank's failure with this code is a lost member: the group restarts. */
export function groupLost(code: string): boolean {
  return LOST.has(code);
}
