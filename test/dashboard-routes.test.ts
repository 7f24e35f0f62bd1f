/**
 * The routes behind the dashboard, over the in-memory service: the page at
 * GET / (open, with its security headers), GET /v1/datasets, and the
 * dashboard stream's events (a snapshot first, then every event of the jobs
 * it lists, then a new snapshot when something changed). The page itself,
 * in a browser against the real stack, is test/dashboard.test.ts.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../dist/src/jobs/api/api-client.js';
import { buildApi } from '../dist/src/jobs/api/build-api.js';
import { DASHBOARD_FILE } from '../dist/src/jobs/api/dashboard-page.js';
import { type SseMessage, SseParser } from '../dist/src/jobs/api/sse.js';
import { AUTH, TOKEN, TRAIN } from './helpers/jobs-api.js';
import { DATASETS, MemoryJobService, NODES } from './helpers/memory-job-service.js';

const apps: ReturnType<typeof buildApi>[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

function api(service = new MemoryJobService()) {
  const app = buildApi({ service, token: TOKEN, dashboard: { intervalMs: 20, jobs: 5 } });
  apps.push(app);
  return { app, service };
}

describe('GET /', () => {
  it('serves the page file without a token, with a policy that allows nothing from elsewhere', async () => {
    const { app } = api();
    const r = await app.inject({ url: '/' });
    expect(r.statusCode).toBe(200);
    expect(r.body).toBe(readFileSync(DASHBOARD_FILE, 'utf8'));
    expect(r.body).toContain('<link rel="icon" href="data:,">');
    expect({
      type: r.headers['content-type'],
      csp: r.headers['content-security-policy'],
      nosniff: r.headers['x-content-type-options'],
      referrer: r.headers['referrer-policy'],
    }).toEqual({
      type: 'text/html; charset=utf-8',
      csp: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      nosniff: 'nosniff',
      referrer: 'no-referrer',
    });
    // Nothing in the page comes from another origin.
    expect(r.body.match(/\b(src|href)="(?!data:)[^"]*"/g)).toBeNull();
  });
});

describe('GET /v1/datasets', () => {
  it('lists the named datasets with a token, refuses without one, and checks its limit', async () => {
    const { app } = api();
    const r = await app.inject({ url: '/v1/datasets', headers: AUTH });
    expect([r.statusCode, r.json()]).toEqual([200, { datasets: DATASETS }]);
    const none = await app.inject({ url: '/v1/datasets' });
    expect([none.statusCode, none.json().code]).toEqual([401, 'ERR_UNAUTHORIZED']);
    const bad = await app.inject({ url: '/v1/datasets?limit=0', headers: AUTH });
    expect([bad.statusCode, bad.json()]).toEqual([
      400,
      { code: 'ERR_BAD_REQUEST', message: 'Expected querystring.limit to be >= 1 but received number 0' },
    ]);
  });

  it('ApiClient.datasets() reads it', async () => {
    const { app } = api();
    await app.listen({ port: 0, host: '127.0.0.1' });
    const client = new ApiClient({
      url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
      token: TOKEN,
    });
    expect(await client.datasets()).toEqual(DATASETS);
  });
});

describe('GET /v1/dashboard/events', () => {
  it('sends a snapshot, every event of the listed jobs, and a new snapshot on change', async () => {
    const { app, service } = api();
    await service.submit(TRAIN);
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1/dashboard/events`;
    const ac = new AbortController();
    const res = await fetch(url, { headers: AUTH, signal: ac.signal });
    expect([res.status, res.headers.get('content-type')]).toEqual([200, 'text/event-stream; charset=utf-8']);
    const parser = new SseParser();
    const got: SseMessage[] = [];
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    const until = async (n: number) => {
      while (got.length < n) {
        const { value } = await reader.read();
        got.push(...parser.push(decoder.decode(value, { stream: true })));
      }
    };
    await until(2);
    const [snap, queued] = got;
    expect(snap!.event).toBe('snapshot');
    expect(JSON.parse(snap!.data)).toEqual({ nodes: NODES, datasets: DATASETS, jobs: [await service.get('train-1')] });
    const first = (await service.events('train-1', undefined, AbortSignal.timeout(1000))[Symbol.asyncIterator]().next())
      .value;
    expect([queued!.event, JSON.parse(queued!.data)]).toEqual(['job', { job: 'train-1', event: first }]);

    const progress = service.emit('train-1', 'progress', { epoch: 0, step: 20, loss: 1.5 });
    await until(3);
    expect([got[2]!.event, JSON.parse(got[2]!.data)]).toEqual(['job', { job: 'train-1', event: progress }]);
    // The job's record changed (its progress): the next check sends a new snapshot.
    await until(4);
    expect([got[3]!.event, JSON.parse(got[3]!.data).jobs[0].progress]).toEqual([
      'snapshot',
      { epoch: 0, step: 20, loss: 1.5 },
    ]);
    ac.abort();
  });

  it('wants the token', async () => {
    const { app } = api();
    const r = await app.inject({ url: '/v1/dashboard/events' });
    expect([r.statusCode, r.json().code]).toEqual([401, 'ERR_UNAUTHORIZED']);
  });
});
