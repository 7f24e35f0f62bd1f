/**
 * GET /v1/dashboard/events: what the dashboard page (GET /) shows, live, on
 * one connection (browsers allow six per server over HTTP/1.1, so one stream
 * per job would stall a page following many). Two kinds of events:
 *
 * - `snapshot`: `{ nodes, datasets, jobs }` (the bodies of GET /v1/nodes,
 *   GET /v1/datasets and GET /v1/jobs?limit=N), sent first and then whenever
 *   it differs from the last one sent, checked every `intervalMs`;
 * - `job`: `{ job, event }` for every event of every job a snapshot listed,
 *   from each job's first event (so the page can draw its whole loss curve)
 *   and then live, exactly as GET /v1/jobs/:id/events carries them.
 *
 * The stream has no end of its own: it runs until the client goes away or
 * the API closes. A failure to read the cluster becomes an `error` event
 * (`{ code, message }`) and ends it.
 */
import type { FastifyInstance } from 'fastify';
import type { JobService } from '../job-types.js';
import { ERROR_REPLIES } from '../schema/record-schemas.js';
import { errorReply } from './error-reply.js';
import { openSseStream } from './sse-stream.js';

export interface DashboardStreamOptions {
  service: JobService;
  bodyLimit: number;
  live: Set<AbortController>;
  /** How often the cluster is read for a new snapshot (default 1 s). */
  intervalMs?: number;
  /** Most recent jobs shown and followed (default 20). */
  jobs?: number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

export function dashboardStream(app: FastifyInstance, opts: DashboardStreamOptions): void {
  const { service, bodyLimit, live } = opts;
  const intervalMs = opts.intervalMs ?? 1000;
  const limit = opts.jobs ?? 20;
  app.get(
    '/v1/dashboard/events',
    {
      schema: {
        summary: "The dashboard's live view: cluster snapshots and every event of the jobs they list",
        description:
          '`event: snapshot` carries `{ nodes, datasets, jobs }` (as GET /v1/nodes, /v1/datasets and ' +
          `/v1/jobs?limit=${limit} answer), first and whenever it changes; \`event: job\` carries ` +
          '`{ job, event }`, each event of a listed job from its first, then live. `event: error` ' +
          '(`{ code, message }`) ends the stream.',
        tags: ['cluster'],
        response: {
          200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: { type: 'object' } } } },
          ...ERROR_REPLIES,
        },
      },
    },
    async (request, reply) => {
      const stream = openSseStream(request, reply, live);
      const { signal } = stream;
      const followed = new Set<string>();
      const fail = async (e: unknown) => {
        if (signal.aborted) return;
        const r = errorReply(e, bodyLimit);
        if (r.expected) request.log.warn({ code: r.payload.code }, r.payload.message);
        else request.log.error({ err: e }, 'dashboard stream failed');
        await stream.send({ event: 'error', data: JSON.stringify(r.payload) });
        stream.end();
      };
      const follow = async (job: string) => {
        for await (const event of service.events(job, undefined, signal)) {
          if (signal.aborted) return;
          await stream.send({ event: 'job', data: JSON.stringify({ job, event }) });
        }
      };
      let last = '';
      try {
        while (!signal.aborted) {
          const [nodes, datasets, jobs] = await Promise.all([
            service.nodes(),
            service.datasets(),
            service.list({ limit }),
          ]);
          const text = JSON.stringify({ nodes, datasets, jobs });
          if (text !== last) {
            last = text;
            await stream.send({ event: 'snapshot', data: text });
          }
          for (const j of jobs) {
            if (followed.has(j.id)) continue;
            followed.add(j.id);
            follow(j.id).catch(fail);
          }
          await sleep(intervalMs, signal);
        }
      } catch (e) {
        await fail(e);
      } finally {
        stream.end();
      }
    },
  );
}
