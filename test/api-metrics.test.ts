/**
 * The API's /metrics, /healthz and /readyz, and its log lines: request durations are
 * labelled by route template (never a raw URL), the text passes
 * `promtool check metrics`, both routes answer without the token, and a
 * client's error is logged at warn with its code while a failure of ours is
 * logged at error with its stack.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { TrellisError } from '../dist/src/errors.js';
import { buildApi } from '../dist/src/jobs/api/build-api.js';
import { AUTH, TOKEN, TRAIN } from './helpers/jobs-api.js';
import { MemoryJobService, NODES } from './helpers/memory-job-service.js';
import { families, promtool, sample } from './helpers/metrics.js';

function capturedApi() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ name: 'trellis-api' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  const service = new MemoryJobService();
  const app = buildApi({ service, token: TOKEN, logger });
  return { app, service, lines };
}

describe('API metrics and logs', () => {
  const apps: ReturnType<typeof capturedApi>['app'][] = [];
  afterEach(async () => {
    for (const a of apps.splice(0)) await a.close();
  });
  function api() {
    const a = capturedApi();
    apps.push(a.app);
    return a;
  }

  it('times requests by method, route template and status, and counts the agents; promtool passes', async () => {
    const { app } = api();
    expect((await app.inject({ url: '/v1/jobs/job-x', headers: AUTH })).statusCode).toBe(404);
    expect((await app.inject({ url: '/v1/jobs/job-y', headers: AUTH })).statusCode).toBe(404);
    expect((await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN, headers: AUTH })).statusCode).toBe(201);
    expect((await app.inject({ url: '/v1/nothing/here', headers: AUTH })).statusCode).toBe(404);
    expect((await app.inject({ url: '/v1/jobs' })).statusCode).toBe(401);

    const r = await app.inject({ url: '/metrics' }); // no token: scrapers carry none
    expect([r.statusCode, r.headers['content-type']]).toEqual([200, 'text/plain; version=0.0.4; charset=utf-8']);
    const text = r.body;
    const count = (method: string, route: string, status: string) =>
      sample(text, 'trellis_api_request_duration_seconds_count', { method, route, status });
    expect({
      notFound: count('GET', '/v1/jobs/:id', '404'),
      created: count('POST', '/v1/jobs', '201'),
      unmatched: count('GET', 'unmatched', '404'),
      unauthorized: count('GET', '/v1/jobs', '401'),
      agents: sample(text, 'trellis_api_agents'),
    }).toEqual({ notFound: 2, created: 1, unmatched: 1, unauthorized: 1, agents: NODES.length });
    // Ids and raw paths never become label values.
    expect(text).not.toMatch(/job-x|job-y|nothing/);
    expect(await promtool(families(text))).toEqual({ code: 0, output: '' });
    // Only the API's own families here: Node's process metrics are for `trellis api` (processMetrics).
    expect(families(text, 'nodejs_')).toBe('\n');
  });

  it('/healthz answers 200 without the token', async () => {
    const { app } = api();
    const r = await app.inject({ url: '/healthz' });
    expect([r.statusCode, r.json()]).toEqual([200, { status: 'ok' }]);
  });

  it('/readyz answers 200 without the token once the service is ready, 503 with its code until then', async () => {
    const { app, service } = api();
    service.notReady = new TrellisError('ERR_STORE_UNAVAILABLE', 'no store reachable: none yet');
    const down = await app.inject({ url: '/readyz' });
    expect([down.statusCode, down.json()]).toEqual([
      503,
      { code: 'ERR_STORE_UNAVAILABLE', message: 'no store reachable: none yet' },
    ]);
    service.notReady = undefined;
    const up = await app.inject({ url: '/readyz' });
    expect([up.statusCode, up.json()]).toEqual([200, { status: 'ready' }]);
  });

  it("logs a client's error at warn with its code and request id, and a failure of ours at error with the stack", async () => {
    const { app, service, lines } = api();
    await app.inject({ url: '/v1/jobs/job-x', headers: { ...AUTH, 'x-request-id': 'req-1' } });
    service.nodes = async () => {
      throw new Error('secret internals');
    };
    await app.inject({ url: '/v1/nodes', headers: { ...AUTH, 'x-request-id': 'req-2' } });
    const failures = lines.filter((l) => (l.level as number) >= 40);
    expect(failures.map(({ level, reqId, code, status, msg }) => ({ level, reqId, code, status, msg }))).toEqual([
      { level: 40, reqId: 'req-1', code: 'ERR_JOB_NOT_FOUND', status: 404, msg: 'no job "job-x"' },
      { level: 50, reqId: 'req-2', code: 'ERR_INTERNAL', status: 500, msg: 'request failed' },
    ]);
    expect(failures[0]).not.toHaveProperty('err');
    expect((failures[1]!.err as { stack: string }).stack).toMatch(/^Error: secret internals\n/);
    // fastify's own lines carry the request id too.
    expect(lines.filter((l) => l.reqId === 'req-1').map((l) => l.msg)).toEqual([
      'incoming request',
      'no job "job-x"',
      'request completed',
    ]);
  });
});
