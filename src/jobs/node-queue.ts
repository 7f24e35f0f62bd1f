/**
 * Names shared by the scheduler (which adds tasks) and the agents (which take
 * them): one BullMQ queue per node, because a BullMQ worker cannot filter a
 * queue, so "run this where its data is" has to mean "put it on that node's
 * queue". BullMQ reserves ':' in queue names and job ids.
 */
import type { ConnectionOptions } from 'bullmq';
import { invalidParameter } from '../errors.js';
import { redisOptions } from './job-store.js';

const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkNodeName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NODE_NAME.test(name))
    throw invalidParameter('node name', 'up to 64 letters, digits, ".", "_" or "-" (no ":")', name);
}

export const queueName = (node: string): string => `node-${node}`;

/**
 * The BullMQ job id of task `index` of job `jobId`: stable, so adding it
 * twice adds it once. A train rank's id names its group attempt too: the
 * rank of a restarted group is a new BullMQ job, even while the old one is
 * still locked by a dead agent.
 */
export const taskJobId = (jobId: string, index: number, attempt?: number): string =>
  attempt === undefined ? `${jobId}.${index}` : `${jobId}.${index}.a${attempt}`;

/** BullMQ connection options: its blocking commands need maxRetriesPerRequest null. */
export function bullConnection(url: string): ConnectionOptions {
  return { ...redisOptions(url), maxRetriesPerRequest: null };
}
