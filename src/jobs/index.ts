/**
 * The `trellis/jobs` entry point: the engine behind the HTTP API
 * (startJobService), the node agent, the redis-server starter, and the
 * records they exchange. Loads bullmq and ioredis; `trellis` itself does not.
 */
export { Agent, type AgentOptions } from './agent.js';
export { checkSpec, type JobServiceOptions, startJobService } from './engine.js';
export type * from './job-types.js';
export { FINAL_STATES } from './job-types.js';
export { freePort, type RedisServerHandle, type RedisServerOptions, startRedisServer } from './redis-server.js';
export { type EngineLogger, SCHEDULER_DEFAULTS, type SchedulerOptions } from './scheduler.js';
export type { TaskContext, TaskOutput, TaskPayload, TaskRunner } from './task-types.js';
