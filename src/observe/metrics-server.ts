/**
 * The small HTTP endpoint of a process that has no HTTP server of its own
 * (`trellis store`, `trellis agent`): GET /metrics answers Prometheus text
 * from a prom-client registry, GET /healthz answers 200 `{ status: 'ok' }`
 * while the process is healthy and 503 with the reason when not. node:http,
 * not fastify: the store daemon should not load a web framework for two
 * routes. Off unless a port is given (--metrics-port).
 *
 * @example
 *   const m = await serveMetrics({ host: '127.0.0.1', port: 9464, registry, health: () => ({ ok: true }) });
 *   m.url; // 'http://127.0.0.1:9464'
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { TrellisError } from '../errors.js';

export interface Health {
  ok: boolean;
  /** Why not, for the 503 body and the operator. */
  reason?: string;
}

export interface MetricsServerOptions {
  host: string;
  /** TCP port; 0 picks a free one (see `url`). */
  port: number;
  registry: Registry;
  health: () => Health | Promise<Health>;
}

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

async function answer(o: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method === 'GET' && path === '/metrics') {
    const text = await o.registry.metrics();
    res.writeHead(200, { 'content-type': o.registry.contentType });
    res.end(text);
    return;
  }
  if (req.method === 'GET' && path === '/healthz') {
    const h = await o.health();
    json(res, h.ok ? 200 : 503, h.ok ? { status: 'ok' } : { status: 'unhealthy', reason: h.reason ?? '' });
    return;
  }
  // The codes and statuses of the API's table (src/jobs/api/http-status.ts), which sits above this folder.
  json(res, 404, { code: 'ERR_ROUTE_NOT_FOUND', message: `no route ${req.method} ${path}` });
}

export function serveMetrics(o: MetricsServerOptions): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    answer(o, req, res).catch((e) => {
      if (!res.headersSent) json(res, 500, { code: 'ERR_INTERNAL', message: (e as Error).message });
      else res.destroy();
    });
  });
  // Scrapers keep connections alive; close() must not wait for them.
  server.keepAliveTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once('error', (e) =>
      reject(new TrellisError('ERR_NATIVE', `cannot serve metrics on ${o.host}:${o.port}: ${e.message}`)),
    );
    server.listen(o.port, o.host, () => {
      const a = server.address() as AddressInfo;
      const host = a.address.includes(':') ? `[${a.address}]` : a.address;
      let closing: Promise<void> | undefined;
      resolve({
        url: `http://${host}:${a.port}`,
        close: () => {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          });
          return closing;
        },
      });
    });
  });
}
