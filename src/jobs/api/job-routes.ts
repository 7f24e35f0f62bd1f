/**
 * The job routes other than the event stream: submit, list, get, logs,
 * cancel. Each is a thin shell over one JobService call; what they add is the
 * schema check going in and the serializer coming out.
 */
import type { FastifyInstance } from 'fastify';
import type { JobFilter, JobService, JobSpec } from '../job-types.js';
import { JOB_KINDS, jobIdParams } from '../schema/job-spec-schema.js';
import { ERROR_REPLIES, JOB_STATES } from '../schema/record-schemas.js';

/** The largest page a list answers: a Job record can carry many tasks. */
export const MAX_LIST_LIMIT = 1000;

export function jobRoutes(app: FastifyInstance, service: JobService): void {
  app.post<{ Body: JobSpec }>(
    '/v1/jobs',
    {
      schema: {
        summary: 'Submit a job',
        description: 'A spec with a client-chosen `id` that exists already answers 200 with that job (idempotent).',
        tags: ['jobs'],
        body: { $ref: 'JobSpec#' },
        response: {
          201: { description: 'created', $ref: 'JobRef#' },
          200: { description: 'a job with this id existed: that job', $ref: 'JobRef#' },
          ...ERROR_REPLIES,
        },
      },
    },
    async (request, reply) => {
      const { job, created } = await service.submit(request.body);
      return reply.code(created ? 201 : 200).send({ id: job.id, state: job.state });
    },
  );

  app.get<{ Querystring: JobFilter }>(
    '/v1/jobs',
    {
      schema: {
        summary: 'List jobs',
        tags: ['jobs'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            state: { type: 'string', enum: JOB_STATES },
            kind: { type: 'string', enum: JOB_KINDS },
            limit: { type: 'integer', minimum: 1, maximum: MAX_LIST_LIMIT },
          },
        },
        response: { 200: { $ref: 'JobList#' }, ...ERROR_REPLIES },
      },
    },
    async (request) => ({ jobs: await service.list(request.query) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/jobs/:id',
    {
      schema: {
        summary: 'One job',
        tags: ['jobs'],
        params: jobIdParams,
        response: { 200: { $ref: 'Job#' }, ...ERROR_REPLIES },
      },
    },
    async (request) => service.get(request.params.id),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/jobs/:id/logs',
    {
      schema: {
        summary: "The job's log so far, as text",
        tags: ['jobs'],
        params: jobIdParams,
        response: {
          200: { description: 'one line per log event', content: { 'text/plain': { schema: { type: 'string' } } } },
          ...ERROR_REPLIES,
        },
      },
    },
    async (request, reply) => {
      const text = await service.logs(request.params.id);
      return reply.type('text/plain; charset=utf-8').send(text);
    },
  );

  app.post<{ Params: { id: string } }>(
    '/v1/jobs/:id/cancel',
    {
      schema: {
        summary: 'Cancel a job',
        description: 'Accepted: running tasks are asked to stop; the state turns cancelled when they have.',
        tags: ['jobs'],
        params: jobIdParams,
        response: { 202: { $ref: 'JobRef#' }, ...ERROR_REPLIES },
      },
    },
    async (request, reply) => {
      const job = await service.cancel(request.params.id);
      return reply.code(202).send({ id: job.id, state: job.state });
    },
  );
}
