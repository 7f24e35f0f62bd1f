/**
 * GET /v1/jobs/:id/events: the job's event log as server-sent events. Each
 * event's `id:` is the JobEvent id, so a client that lost the connection asks
 * again with `Last-Event-ID` and gets exactly the events after it (browsers'
 * EventSource does this by itself). The stream ends after the event carrying
 * a final state, because the engine's iterator ends there. When the client
 * goes away, the AbortSignal handed to service.events fires so the engine
 * stops watching for that client.
 */
import type { FastifyInstance } from 'fastify';
import type { JobService } from '../job-types.js';
import { jobIdParams } from '../schema/job-spec-schema.js';
import { ERROR_REPLIES } from '../schema/record-schemas.js';
import { errorReply } from './error-reply.js';
import { openSseStream } from './sse-stream.js';

export interface EventsRouteOptions {
  service: JobService;
  bodyLimit: number;
  /** Streams still open; closing the API aborts them so it does not wait on clients. */
  live: Set<AbortController>;
}

export function eventsRoute(app: FastifyInstance, { service, bodyLimit, live }: EventsRouteOptions): void {
  app.get<{ Params: { id: string }; Headers: { 'last-event-id'?: string } }>(
    '/v1/jobs/:id/events',
    {
      schema: {
        summary: "The job's events as server-sent events, resumable with Last-Event-ID",
        description:
          'Each event has `id:` (pass the last one seen back as the Last-Event-ID header to resume), ' +
          '`event:` (state, progress, task, log; or error when the stream failed after it began) and ' +
          '`data:` (JSON, shaped as JobEventData[event]). The stream ends after the final state.',
        tags: ['jobs'],
        params: jobIdParams,
        headers: {
          type: 'object',
          properties: { 'last-event-id': { type: 'string', minLength: 1, maxLength: 256 } },
        },
        response: {
          200: {
            description: 'text/event-stream',
            content: { 'text/event-stream': { schema: { $ref: 'JobEventData#' } } },
          },
          ...ERROR_REPLIES,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      // Unknown ids get a JSON 404 before the stream begins; after the 200 only `event: error` can say anything.
      await service.get(id);
      const stream = openSseStream(request, reply, live);
      const { signal } = stream;
      try {
        for await (const ev of service.events(id, request.headers['last-event-id'], signal)) {
          if (signal.aborted) break;
          await stream.send({ id: ev.id, event: ev.type, data: JSON.stringify(ev.data) });
        }
      } catch (e) {
        if (!signal.aborted) {
          const r = errorReply(e, bodyLimit);
          if (r.expected) request.log.warn({ code: r.payload.code }, r.payload.message);
          else request.log.error({ err: e }, 'event stream failed');
          await stream.send({ event: 'error', data: JSON.stringify(r.payload) });
        }
      } finally {
        stream.end();
      }
    },
  );
}
