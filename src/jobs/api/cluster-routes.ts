/**
 * What the scheduler sees of the cluster: the nodes with their memory and
 * queue depth, and where a dataset's shards live.
 */
import type { FastifyInstance } from 'fastify';
import type { JobService } from '../job-types.js';
import { ERROR_REPLIES } from '../schema/record-schemas.js';

export function clusterRoutes(app: FastifyInstance, service: JobService): void {
  app.get(
    '/v1/nodes',
    {
      schema: {
        summary: 'The nodes, their memory and their task queues',
        tags: ['cluster'],
        response: { 200: { $ref: 'NodeList#' }, ...ERROR_REPLIES },
      },
    },
    async () => ({ nodes: await service.nodes() }),
  );

  app.get<{ Querystring: { limit?: number } }>(
    '/v1/datasets',
    {
      schema: {
        summary: 'Every named dataset with its shards and the bytes each node holds, by name',
        tags: ['cluster'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        },
        response: { 200: { $ref: 'DatasetList#' }, ...ERROR_REPLIES },
      },
    },
    async (request) => ({ datasets: await service.datasets(request.query.limit ?? 100) }),
  );

  app.get<{ Params: { name: string } }>(
    '/v1/datasets/:name',
    {
      schema: {
        summary: "A dataset's shards and the bytes each node holds",
        description: 'Dataset names may contain `/`: encode it as %2F (encodeURIComponent).',
        tags: ['cluster'],
        params: {
          type: 'object',
          additionalProperties: false,
          required: ['name'],
          properties: { name: { type: 'string', minLength: 1, maxLength: 1024 } },
        },
        response: { 200: { $ref: 'DatasetInfo#' }, ...ERROR_REPLIES },
      },
    },
    async (request) => service.dataset(request.params.name),
  );
}
