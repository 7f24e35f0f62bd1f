/**
 * The jobs API on a real socket, driven by the client module the CLI and the
 * demo use (ApiClient): every call end to end, errors coming back as the
 * TrellisError they were, the event stream followed live, resumed across a
 * server restart, and ended cleanly when the client goes away or the server
 * closes.
 */
import { createServer, get as httpGet } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../dist/src/jobs/api/api-client.js';
import { buildApi } from '../dist/src/jobs/api/build-api.js';
import type { JobEvent } from '../dist/src/jobs/job-types.js';
import { errCode, eventually } from './helpers/child.js';
import { INFER, listenApi, MAP, TOKEN, TRAIN } from './helpers/jobs-api.js';
import { CREATED_AT, DATASETS, NODES } from './helpers/memory-job-service.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});
async function served(opts: { token?: string } = {}) {
  const t = await listenApi(opts);
  cleanups.push(() => t.app.close());
  return t;
}

async function collect(it: AsyncIterable<JobEvent>): Promise<JobEvent[]> {
  const out: JobEvent[] = [];
  for await (const ev of it) out.push(ev);
  return out;
}

describe('ApiClient over a listening API', () => {
  it('submits, lists, gets, reads logs, nodes and datasets, and cancels', async () => {
    const { url, service } = await served({ token: TOKEN });
    const api = new ApiClient({ url, token: TOKEN });
    expect(await api.submit(TRAIN)).toEqual({ id: 'train-1', state: 'queued', created: true });
    expect(await api.submit(TRAIN)).toEqual({ id: 'train-1', state: 'queued', created: false });
    expect(await api.submit(MAP)).toEqual({ id: 'job-1', state: 'queued', created: true });
    service.emit('job-1', 'log', { line: 'shard 0 done' });
    service.emit('job-1', 'state', { state: 'succeeded' });
    const train = { id: 'train-1', kind: 'train', state: 'queued', createdAt: CREATED_AT, spec: TRAIN, tasks: [] };
    const map = {
      id: 'job-1',
      kind: 'map',
      state: 'succeeded',
      createdAt: CREATED_AT,
      endedAt: CREATED_AT,
      spec: MAP,
      tasks: [],
    };
    expect(await api.list()).toEqual([train, map]);
    expect(await api.list({ state: 'succeeded', kind: 'map', limit: 5 })).toEqual([map]);
    expect(await api.get('job-1')).toEqual(map);
    expect(await api.logs('job-1')).toBe('shard 0 done\n');
    expect(await api.nodes()).toEqual(NODES);
    expect(await api.dataset('fmnist/train')).toEqual(DATASETS[0]);
    expect(await api.cancel('train-1')).toEqual({ id: 'train-1', state: 'cancelled' });
    expect(service.submitted).toEqual([TRAIN, TRAIN, MAP]);
  });

  it("answers the API's errors as TrellisErrors with their codes", async () => {
    const { url, service } = await served({ token: TOKEN });
    const api = new ApiClient({ url, token: TOKEN });
    expect(await errCode(api.get('nope'))).toBe('ERR_JOB_NOT_FOUND');
    expect(await errCode(api.dataset('nope'))).toBe('ERR_NAME_NOT_FOUND');
    expect(await errCode(api.submit({ ...TRAIN, epochs: 0 }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(new ApiClient({ url }).list())).toBe('ERR_UNAUTHORIZED');
    expect(await errCode(new ApiClient({ url, token: `${TOKEN}-wrong` }).submit(INFER))).toBe('ERR_UNAUTHORIZED');
    expect(await errCode(collect(new ApiClient({ url }).events('train-1')))).toBe('ERR_UNAUTHORIZED');
    expect(service.submitted).toEqual([]);
    const err = await api.get('nope').catch((e) => e);
    expect([err.name, err.code, err.message]).toEqual(['TrellisError', 'ERR_JOB_NOT_FOUND', 'no job "nope"']);
  });

  it('an API that is not there is ERR_DISCONNECTED; a bad URL is ERR_BAD_REQUEST', async () => {
    const { app, url } = await listenApi();
    await app.close();
    const err = await new ApiClient({ url }).list().catch((e) => e);
    expect([err.code, err.message]).toEqual(['ERR_DISCONNECTED', `cannot reach the API at ${url}: ECONNREFUSED`]);
    expect(await errCode(() => new ApiClient({ url: 'not a url' }))).toBe('ERR_BAD_REQUEST');
    expect(await errCode(() => new ApiClient({ url: 'ftp://host/' }))).toBe('ERR_BAD_REQUEST');
  });

  it('a reply that breaks the contract is ERR_PROTOCOL', async () => {
    const server = createServer((req, res) => {
      res.writeHead(req.url === '/v1/jobs' ? 200 : 500, { 'content-type': 'application/json' });
      res.end(req.url === '/v1/jobs' ? '{"jobs":[{"id":"x"}]}' : '{"error":"boom"}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const api = new ApiClient({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
    const bad = await api.list().catch((e) => e);
    expect([bad.code, bad.message]).toEqual([
      'ERR_PROTOCOL',
      'the API answered GET /v1/jobs with a reply.jobs[0] is missing the field "kind"',
    ]);
    const status = await api.get('x').catch((e) => e);
    expect([status.code, status.message]).toEqual([
      'ERR_PROTOCOL',
      'the API answered HTTP 500 without a { code, message } body',
    ]);
  });
});

describe('the event stream over a socket', () => {
  it('skips event types the client does not know (a newer server), resuming past them', async () => {
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (req.headers['last-event-id'] === undefined) {
        // the connection drops after an unknown event: the client resumes after its id
        res.end('id: 1\nevent: state\ndata: {"state":"running"}\n\nid: 2\nevent: future\ndata: {"x":1}\n\n');
      } else {
        res.end(`id: 3\nevent: state\ndata: {"state":"succeeded"}\n\n`);
        seen.push(String(req.headers['last-event-id']));
      }
    });
    const seen: string[] = [];
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const api = new ApiClient({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
    expect(await collect(api.events('j'))).toEqual([
      { id: '1', type: 'state', data: { state: 'running' } },
      { id: '3', type: 'state', data: { state: 'succeeded' } },
    ]);
    expect(seen).toEqual(['2']);
  });

  it('follows a live job to its final state, then resumes after any event id', async () => {
    const { url, service } = await served();
    const api = new ApiClient({ url });
    await api.submit(TRAIN);
    const followed = collect(api.events('train-1'));
    await eventually(() => service.signals.length === 1, 'the stream reaching the service');
    service.emit('train-1', 'state', { state: 'running' });
    service.emit('train-1', 'progress', { epoch: 1, step: 10, loss: 0.7, samplesPerSec: 1000, etaMs: 900 });
    service.emit('train-1', 'log', { line: 'epoch 1' });
    service.emit('train-1', 'state', { state: 'succeeded' });
    const all = service.eventsOf('train-1');
    expect(await followed).toEqual(all);
    expect(await collect(api.events('train-1', { lastEventId: all[1]!.id }))).toEqual(all.slice(2));
    expect(service.afterIds).toEqual([undefined, all[1]!.id]);
  });

  it('a stream the server fails after it began throws the error event as its TrellisError', async () => {
    const { url } = await served();
    const api = new ApiClient({ url });
    await api.submit(TRAIN);
    const err = await collect(api.events('train-1', { lastEventId: 'bogus' })).catch((e) => e);
    expect([err.code, err.message]).toEqual(['ERR_BAD_REQUEST', 'job train-1 has no event bogus']);
    expect(await errCode(collect(api.events('nope')))).toBe('ERR_JOB_NOT_FOUND');
  });

  it('a client that goes away aborts the service’s events() (a raw socket closed mid-stream)', async () => {
    const { url, service } = await served();
    await new ApiClient({ url }).submit(TRAIN);
    const first = await new Promise<string>((resolve, reject) => {
      const req = httpGet(`${url}/v1/jobs/train-1/events`, (res) => {
        res.setEncoding('utf8');
        res.once('data', (chunk: string) => {
          req.destroy();
          resolve(chunk);
        });
      });
      req.on('error', reject);
    });
    expect(first).toBe('id: 1\nevent: state\ndata: {"state":"queued"}\n\n');
    await eventually(() => service.signals[0]?.aborted, 'the signal firing');
    expect(service.signals.map((s) => s.aborted)).toEqual([true]);
  });

  it('breaking out of ApiClient.events closes the connection and aborts the server side', async () => {
    const { url, service } = await served();
    const api = new ApiClient({ url });
    await api.submit(TRAIN);
    for await (const ev of api.events('train-1')) {
      expect(ev).toEqual({ id: '1', type: 'state', data: { state: 'queued' } });
      break;
    }
    await eventually(() => service.signals[0]?.aborted, 'the signal firing');
    // the user's own signal ends a stream quietly too
    const ac = new AbortController();
    const seen: JobEvent[] = [];
    const done = (async () => {
      for await (const ev of api.events('train-1', { signal: ac.signal })) seen.push(ev);
    })();
    await eventually(() => service.signals.length === 2, 'the second stream');
    ac.abort();
    await done;
    expect(seen).toEqual([{ id: '1', type: 'state', data: { state: 'queued' } }]);
    await eventually(() => service.signals[1]?.aborted, 'the second signal firing');
  });

  it('closing the API ends open streams at once; the client resumes after a restart with exactly the missed events', async () => {
    const first = await listenApi();
    const { service } = first;
    const port = (first.app.server.address() as AddressInfo).port;
    const api = new ApiClient({ url: first.url });
    await api.submit(TRAIN);

    // Without reconnecting, the end of the stream before the final state is an error.
    const once = collect(api.events('train-1', { reconnect: false }));
    // With it (the default), the client asks again with Last-Event-ID.
    const resumed: JobEvent[] = [];
    const following = (async () => {
      for await (const ev of api.events('train-1')) resumed.push(ev);
    })();
    await eventually(() => service.signals.length === 2, 'both streams open');
    service.emit('train-1', 'state', { state: 'running' });
    await eventually(() => resumed.length === 2, 'the running state arriving');

    const t0 = Date.now();
    await first.app.close();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(service.signals.map((s) => s.aborted)).toEqual([true, true]);
    const err = await once.catch((e) => e);
    expect([err.code, err.message]).toEqual([
      'ERR_DISCONNECTED',
      'the event stream of job train-1 ended before its final state',
    ]);

    service.emit('train-1', 'log', { line: 'while the API was down' });
    const second = buildApi({ service });
    cleanups.push(() => second.close());
    await second.listen({ port, host: '127.0.0.1' });
    service.emit('train-1', 'state', { state: 'succeeded' });
    await following;
    expect(resumed).toEqual(service.eventsOf('train-1'));
    expect(service.afterIds.at(-1)).toBe(resumed[1]!.id);
  });

  it('a request that arrives on a kept-alive connection while the API closes answers 503 ERR_SHUTTING_DOWN', async () => {
    const { app, service } = await listenApi();
    const sock = connect((app.server.address() as AddressInfo).port, '127.0.0.1');
    cleanups.push(async () => sock.destroy());
    let got = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (got += d));
    await new Promise((r) => sock.once('connect', r));
    const body = JSON.stringify(TRAIN);
    // A submit still being sent when close() begins is served; the next request on its connection is refused.
    sock.write(
      `POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`,
    );
    sock.write(body.slice(0, 10));
    await new Promise((r) => setTimeout(r, 50));
    const closing = app.close();
    await new Promise((r) => setTimeout(r, 50));
    sock.write(`${body.slice(10)}GET /v1/jobs HTTP/1.1\r\nhost: x\r\n\r\n`);
    await closing;
    await eventually(() => got.includes('ERR_SHUTTING_DOWN'), 'the second reply');
    const replies = got.split(/(?=HTTP\/1\.1 )/).map((r) => [r.split('\r\n')[0], r.slice(r.indexOf('\r\n\r\n') + 4)]);
    expect(replies).toEqual([
      ['HTTP/1.1 201 Created', '{"id":"train-1","state":"queued"}'],
      ['HTTP/1.1 503 Service Unavailable', '{"code":"ERR_SHUTTING_DOWN","message":"the API is shutting down"}'],
    ]);
    expect(service.filters).toEqual([]);
  });
});
