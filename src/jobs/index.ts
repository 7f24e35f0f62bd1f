/**
 * `trellis/jobs`: the jobs layer — the HTTP API and its client, the engine
 * behind it (startJobService), the node agent, the redis-server starter, and
 * the records they exchange. Apart from the package's main entry so that
 * `import { connect } from 'trellis'` loads neither fastify nor bullmq.
 */

export { freePort } from '../free-port.js';
export { type EtcdServerHandle, startEtcdServer } from '../meta/etcd-server.js';
export { Agent, type AgentOptions } from './agent.js';
export { ApiClient, type ApiClientOptions, type EventsOptions, type JobRef } from './api/api-client.js';
export { type ApiOptions, buildApi, DEFAULT_BODY_LIMIT } from './api/build-api.js';
export { httpStatusOf } from './api/http-status.js';
export { type JobServiceOptions, startJobService } from './engine.js';
export type * from './job-types.js';
export { FINAL_STATES } from './job-types.js';
export { type RedisServerHandle, type RedisServerOptions, startRedisServer } from './redis-server.js';
export { type EngineLogger, SCHEDULER_DEFAULTS, type SchedulerOptions } from './scheduler.js';
export { checkSpec } from './schema/check-spec.js';
export type { TaskContext, TaskOutput, TaskPayload, TaskRunner } from './task-types.js';
