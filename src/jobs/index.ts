/**
 * `trellis/jobs`: the jobs API and its client, apart from the package's main
 * entry so that `import { connect } from 'trellis'` does not load fastify.
 */
export { ApiClient, type ApiClientOptions, type EventsOptions, type JobRef } from './api/api-client.js';
export { type ApiOptions, buildApi, DEFAULT_BODY_LIMIT } from './api/build-api.js';
export { httpStatusOf } from './api/http-status.js';
export { type JobServiceOptions, startJobService } from './engine.js';
export type * from './job-types.js';
export { FINAL_STATES } from './job-types.js';
