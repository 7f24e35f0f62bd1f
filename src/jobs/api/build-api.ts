/**
 * The jobs HTTP API over a JobService (docs/ARCHITECTURE.md, "Jobs API").
 * buildApi wires the pieces and returns a fastify instance that is not
 * listening yet: tests drive it with inject(), `trellis api` listens.
 *
 * ```ts
 * const app = buildApi({ service, token, logger: pino() });
 * await app.listen({ port: 7080, host: '127.0.0.1' });
 * ```
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { TrellisError } from '../../errors.js';
import type { JobService } from '../job-types.js';
import { createAjv, SHARED_SCHEMAS } from '../schema/schema-set.js';
import { apiMetrics, OPERATIONS_ROUTES } from './api-metrics.js';
import { bearerCheck } from './bearer-auth.js';
import { clusterRoutes } from './cluster-routes.js';
import { errorReply } from './error-reply.js';
import { eventsRoute } from './events-route.js';
import { jobRoutes } from './job-routes.js';

export interface ApiOptions {
  service: JobService;
  /** When set, every route but /openapi.json wants `Authorization: Bearer <token>`. */
  token?: string;
  /** A pino logger (fastify logs each request through it); none: no logging. */
  logger?: FastifyBaseLogger;
  /** Largest request body in bytes (default 1 MiB: a JobSpec is a few hundred bytes, `args` included). */
  bodyLimit?: number;
  /** Serve Node's process metrics (nodejs_*, process_*) on /metrics beside the API's own (`trellis api` does). */
  processMetrics?: boolean;
}

export const DEFAULT_BODY_LIMIT = 1024 * 1024;

/** Routes that answer without a token: the API's description, and what probes and scrapers read. */
const OPEN_ROUTES = new Set<string>(['/openapi.json', ...OPERATIONS_ROUTES]);

/** A client's x-request-id is kept when it is a plain token, so logs of both sides line up. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function buildApi(opts: ApiOptions): FastifyInstance {
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const app = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger } : { logger: false }),
    bodyLimit,
    // fastify's own 503 while closing has its own body shape; ours is ERR_SHUTTING_DOWN below.
    return503OnClosing: false,
    // A HEAD of an event stream means nothing; only the routes listed here exist.
    exposeHeadRoutes: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
  });

  // Bodies are checked without coercion, querystrings and headers (strings on the wire) with it.
  const strict = createAjv(false);
  const coercing = createAjv(true);
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === 'body' ? strict : coercing).compile(schema as object),
  );
  for (const s of SHARED_SCHEMAS) app.addSchema(s);
  // fastify parses text/plain bodies by default; every body here is JSON, anything else is a 415.
  app.removeContentTypeParser('text/plain');

  // Loaded before the routes' plugin below, so its onRoute hook sees every route.
  app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Trellis jobs API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      ...(opts.token ? { security: [{ bearer: [] }] } : {}),
    },
    // Shared schemas appear under components.schemas by their $id (JobSpec, Job, ...), not def-0, def-1.
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });

  let closing = false;
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // Requests on kept-alive connections can still arrive while the server closes.
    if (closing) throw new TrellisError('ERR_SHUTTING_DOWN', 'the API is shutting down');
  });
  if (opts.token) {
    const check = bearerCheck(opts.token);
    app.addHook('onRequest', async (request) => {
      if (!OPEN_ROUTES.has(request.routeOptions.url ?? '')) check(request.headers.authorization);
    });
  }

  app.setErrorHandler((err, request, reply) => {
    const r = errorReply(err, bodyLimit);
    // A client's mistake is a warning with its code, not a stack; only a failure of ours carries one.
    const fields = { code: r.payload.code, status: r.status };
    if (!r.expected) request.log.error({ ...fields, err }, 'request failed');
    else if (r.status >= 500) request.log.error(fields, r.payload.message);
    else request.log.warn(fields, r.payload.message);
    if (r.payload.code === 'ERR_UNAUTHORIZED') reply.header('www-authenticate', 'Bearer');
    return reply.code(r.status).send(r.payload);
  });
  app.setNotFoundHandler((request) => {
    throw new TrellisError('ERR_ROUTE_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`);
  });

  // Closing must not wait on clients: event streams are ended, and sockets that never sent a
  // request (undici and browsers open them ahead of need) are dropped, since Node does not count
  // them as idle and would hold close() until its headers timeout (60 s).
  const live = new Set<AbortController>();
  const unused = new Set<Socket>();
  app.server.on('connection', (socket: Socket) => {
    unused.add(socket);
    socket.once('close', () => unused.delete(socket));
  });
  app.server.on('request', (req: IncomingMessage) => unused.delete(req.socket));
  app.addHook('preClose', async () => {
    closing = true;
    for (const ac of live) ac.abort();
    for (const socket of unused) socket.destroy();
  });

  // A root hook (before the routes' plugin): every request is timed, unmatched ones too.
  apiMetrics(app, opts.service, { processMetrics: opts.processMetrics });

  app.register(async (routes) => {
    jobRoutes(routes, opts.service);
    eventsRoute(routes, { service: opts.service, bodyLimit, live });
    clusterRoutes(routes, opts.service);
    routes.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  });
  return app;
}
