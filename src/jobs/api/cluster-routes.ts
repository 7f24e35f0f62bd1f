/**
 * What the scheduler sees of the cluster: the nodes with their memory and
 * queue depth, and where a dataset's shards live.
 */
import type { FastifyInstance } from 'fastify';
import type { JobService } from '../job-types.js';

const errors = {
  '4xx': { description: 'the request was refused: { code, message }', $ref: 'ErrorReply#' },
  '5xx': { description: 'the server or the engine failed: { code, message }', $ref: 'ErrorReply#' },
} as const;

export function clusterRoutes(app: FastifyInstance, service: JobService): void {
  app.get(
    '/v1/nodes',
    {
      schema: {
        summary: 'The nodes, their memory and their task queues',
        tags: ['cluster'],
        response: { 200: { $ref: 'NodeList#' }, ...errors },
      },
    },
    async () => ({ nodes: await service.nodes() }),
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
        response: { 200: { $ref: 'DatasetInfo#' }, ...errors },
      },
    },
    async (request) => service.dataset(request.params.name),
  );
}
