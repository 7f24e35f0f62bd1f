/**
 * The API's Prometheus metrics and its operational routes: GET /metrics
 * (prom-client text), GET /healthz (liveness: the process serves) and GET
 * /readyz (readiness: a store and Redis answer, so jobs can be placed; an
 * API started before its stores is live but not ready). Request durations are labelled by the
 * route's template (`/v1/jobs/:id`), never the raw URL, so job ids cannot
 * grow the series without bound; a request no route matched counts under
 * route="unmatched". One registry per app (tests build many).
 *
 * prom-client directly rather than fastify-metrics, which wants Node 22.
 */
import type { FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { JobService } from '../job-types.js';

/** From 1 ms (a cached GET) to 60 s (an event stream or a slow Redis); streams stay open longer and land in +Inf. */
export const API_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Routes every caller may reach without a token: probes and scrapers carry none. */
export const OPERATIONS_ROUTES = ['/metrics', '/healthz', '/readyz'] as const;

export interface ApiMetricsOptions {
  /** Also serve Node's process metrics (nodejs_*, process_*): `trellis api` does, tests need not. */
  processMetrics?: boolean;
}

export function apiMetrics(app: FastifyInstance, service: JobService, o: ApiMetricsOptions): Registry {
  const registry = new Registry();
  const durations = new Histogram({
    name: 'trellis_api_request_duration_seconds',
    help: 'Time to answer an API request, by method, route template and HTTP status',
    labelNames: ['method', 'route', 'status'],
    buckets: API_DURATION_BUCKETS,
    registers: [registry],
  });
  new Gauge({
    name: 'trellis_api_agents',
    help: 'Nodes whose agent sent a heartbeat lately (the nodes jobs can be placed on)',
    registers: [registry],
    async collect() {
      // Redis down: the figure is unknown, and the scrape still answers the rest.
      const nodes = await service.nodes().catch(() => null);
      if (nodes) this.set(nodes.length);
    },
  });
  app.addHook('onResponse', async (request, reply) => {
    durations.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  const scraped = o.processMetrics ? Registry.merge([registry, nodeRegistry()]) : registry;
  // A plugin, loaded after @fastify/swagger's, so the OpenAPI document lists both routes.
  app.register(async (routes) => operationsRoutes(routes, scraped, service));
  return registry;
}

function operationsRoutes(app: FastifyInstance, scraped: Registry, service: JobService): void {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics of the API (and of its Node process under `trellis api`)',
        tags: ['operations'],
        security: [],
        response: {
          200: {
            description: 'Prometheus text exposition format 0.0.4',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
        },
      },
    },
    async (_request, reply) => reply.type(scraped.contentType).send(await scraped.metrics()),
  );
  // While closing, the onRequest hook of build-api.ts answers 503 ERR_SHUTTING_DOWN before either runs.
  probe(app, '/healthz', 'ok', 'Liveness: 200 while the API serves, 503 while it shuts down', async () => {});
  probe(
    app,
    '/readyz',
    'ready',
    'Readiness: 200 once a store and Redis answer; 503 ERR_STORE_UNAVAILABLE while no store is reachable (the API connects when one appears), ERR_QUEUE_UNAVAILABLE while Redis is not connected',
    () => service.ready(),
  );
}

/** A probe route: `{status}` once `check` resolves, the error's code and status when it throws. */
function probe(app: FastifyInstance, url: string, status: string, summary: string, check: () => Promise<void>): void {
  const schema = {
    summary,
    tags: ['operations'],
    security: [],
    response: {
      200: {
        type: 'object',
        additionalProperties: false,
        required: ['status'],
        properties: { status: { type: 'string', enum: [status] } },
      },
    },
  };
  app.get(url, { schema }, async () => {
    await check();
    return { status };
  });
}

function nodeRegistry(): Registry {
  const r = new Registry();
  collectDefaultMetrics({ register: r });
  return r;
}
