/**
 * GET /: the dashboard, one static HTML file of the package
 * (src/jobs/api/dashboard.html: plain JS and CSS, nothing from elsewhere).
 * It loads without a token, which it then sends to the JSON routes it reads
 * (docs/SECURITY.md, "The dashboard"); read once, on the first request.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { PACKAGE_ROOT } from '../../package-root.js';

export const DASHBOARD_FILE = join(PACKAGE_ROOT, 'src/jobs/api/dashboard.html');

/**
 * The page's script and style are inline (no second request, no build), so
 * the policy allows inline code and nothing else: no other origin, no
 * plugins, no framing, and requests only back to this API.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'unsafe-inline'",
  "style-src 'unsafe-inline'",
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function dashboardPage(app: FastifyInstance): void {
  let html: Buffer | undefined;
  app.get(
    '/',
    {
      schema: {
        summary: 'The dashboard: nodes, datasets and jobs, live (an HTML page; no token needed to load it)',
        tags: ['dashboard'],
        produces: ['text/html'],
      },
    },
    async (_request, reply) => {
      html ??= readFileSync(DASHBOARD_FILE);
      return reply
        .type('text/html; charset=utf-8')
        .header('content-security-policy', CSP)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache')
        .send(html);
    },
  );
}
