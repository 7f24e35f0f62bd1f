/**
 * The one way to get a JobService: `trellis api` (and later the demo) call
 * startJobService and know nothing else of the engine. This is a stand-in
 * until the engine (scheduler, BullMQ queues, agents) lands: it refuses, so
 * `trellis api` fails at start with a clear message instead of serving a
 * service that cannot run anything.
 */
import type { FastifyBaseLogger } from 'fastify';
import { TrellisError } from '../errors.js';
import type { JobService } from './job-types.js';

export interface JobServiceOptions {
  /** redis://HOST:PORT of the task queues. */
  redis: string;
  /** Metadata backend: local or etcd://HOST:PORT. */
  meta?: string;
  /** A local store's socket, for dataset locations and node status. */
  socket?: string;
  /** Shared token for the stores' RPC. */
  token?: string;
  logger: FastifyBaseLogger;
}

export async function startJobService(_opts: JobServiceOptions): Promise<JobService> {
  throw new TrellisError('ERR_UNSUPPORTED', 'the job engine is not built yet');
}
