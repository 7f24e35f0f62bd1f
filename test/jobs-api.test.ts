/**
 * The jobs HTTP API through inject(), over an in-memory JobService: every
 * route's happy path, idempotent submit, list filters, the event stream
 * (full, live, resumed, ended by the final state), and every refusal with its
 * code and status, checking that nothing reached the service.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Job, JobSpec } from '../dist/src/jobs/job-types.js';
import { AUTH, asSse, INFER, injectApi, MAP, parseSse, type TestApi, TOKEN, TRAIN } from './helpers/jobs-api.js';
import { CREATED_AT, DATASETS, NODES } from './helpers/memory-job-service.js';

const apis: TestApi[] = [];
afterEach(async () => {
  for (const a of apis.splice(0)) await a.app.close();
});
function api(opts: Parameters<typeof injectApi>[0] = {}): TestApi {
  const a = injectApi(opts);
  apis.push(a);
  return a;
}

function queued(id: string, spec: JobSpec): Job {
  return { id, kind: spec.kind, state: 'queued', createdAt: CREATED_AT, spec, tasks: [] };
}

describe('jobs API routes', () => {
  it('POST /v1/jobs answers 201 { id, state } and hands the spec to the service as sent', async () => {
    const { app, service } = api();
    const r = await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    expect(r.statusCode).toBe(201);
    expect(r.json()).toEqual({ id: 'train-1', state: 'queued' });
    const m = await app.inject({ method: 'POST', url: '/v1/jobs', payload: MAP });
    expect([m.statusCode, m.json()]).toEqual([201, { id: 'job-1', state: 'queued' }]);
    const i = await app.inject({ method: 'POST', url: '/v1/jobs', payload: INFER });
    expect([i.statusCode, i.json()]).toEqual([201, { id: 'infer-1', state: 'queued' }]);
    expect(service.submitted).toEqual([TRAIN, MAP, INFER]);
  });

  it('submitting the same client-chosen id again answers 200 with the same job', async () => {
    const { app, service } = api();
    const first = await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    service.emit('train-1', 'state', { state: 'running' });
    const again = await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    expect([first.statusCode, first.json()]).toEqual([201, { id: 'train-1', state: 'queued' }]);
    expect([again.statusCode, again.json()]).toEqual([200, { id: 'train-1', state: 'running' }]);
    const list = await app.inject({ url: '/v1/jobs' });
    expect(list.json().jobs.map((j: Job) => j.id)).toEqual(['train-1']);
  });

  it('GET /v1/jobs lists every job, and filters by state, kind and limit', async () => {
    const { app, service } = api();
    for (const spec of [TRAIN, MAP, INFER]) await app.inject({ method: 'POST', url: '/v1/jobs', payload: spec });
    service.emit('infer-1', 'state', { state: 'running' });
    const all = await app.inject({ url: '/v1/jobs' });
    expect(all.statusCode).toBe(200);
    expect(all.json()).toEqual({
      jobs: [
        queued('train-1', TRAIN),
        queued('job-1', MAP),
        { ...queued('infer-1', INFER), state: 'running', startedAt: CREATED_AT },
      ],
    });
    const byState = await app.inject({ url: '/v1/jobs?state=queued' });
    expect(byState.json()).toEqual({ jobs: [queued('train-1', TRAIN), queued('job-1', MAP)] });
    const byKind = await app.inject({ url: '/v1/jobs?kind=map' });
    expect(byKind.json()).toEqual({ jobs: [queued('job-1', MAP)] });
    const limited = await app.inject({ url: '/v1/jobs?state=queued&kind=train&limit=1' });
    expect(limited.json()).toEqual({ jobs: [queued('train-1', TRAIN)] });
    // querystring numbers arrive as strings and are handed over as numbers
    expect(service.filters).toEqual([
      {},
      { state: 'queued' },
      { kind: 'map' },
      { state: 'queued', kind: 'train', limit: 1 },
    ]);
  });

  it('GET /v1/jobs/:id answers the whole record: tasks, progress, result, reason and error included', async () => {
    const { app, service } = api();
    await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    const task = {
      index: 0,
      node: 'node-a',
      state: 'running',
      attempts: 1,
      bytesLocal: 3000,
      bytesMoved: 0,
      placement: { reason: 'holds 100% of the input' },
    } as const;
    service.emit('train-1', 'state', { state: 'running' });
    service.emit('train-1', 'task', task);
    service.emit('train-1', 'progress', { epoch: 1, step: 120, loss: 0.53, samplesPerSec: 41000, etaMs: 2500 });
    const r = await app.inject({ url: '/v1/jobs/train-1' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({
      ...queued('train-1', TRAIN),
      state: 'running',
      startedAt: CREATED_AT,
      tasks: [task],
      progress: { epoch: 1, step: 120, loss: 0.53, samplesPerSec: 41000, etaMs: 2500 },
    });
    const result = { model: 'train-1/model', metrics: { accuracy: 0.871, loss: 0.36 }, output: 'train-1/output' };
    service.setResult('train-1', result);
    const error = { code: 'ERR_TIMEOUT', message: 'ran past timeoutMs 60000' };
    service.emit('train-1', 'state', { state: 'failed', reason: 'timed out', error });
    const done = await app.inject({ url: '/v1/jobs/train-1' });
    expect(done.json()).toEqual({
      ...queued('train-1', TRAIN),
      state: 'failed',
      reason: 'timed out',
      startedAt: CREATED_AT,
      endedAt: CREATED_AT,
      tasks: [task],
      progress: { epoch: 1, step: 120, loss: 0.53, samplesPerSec: 41000, etaMs: 2500 },
      result,
      error,
    });
  });

  it('GET /v1/jobs/:id/logs answers the log lines as text', async () => {
    const { app, service } = api();
    await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    service.emit('train-1', 'log', { line: 'epoch 1 loss 0.53' });
    service.emit('train-1', 'log', { line: 'epoch 2 loss 0.41', task: 0 });
    const r = await app.inject({ url: '/v1/jobs/train-1/logs' });
    expect([r.statusCode, r.headers['content-type'], r.body]).toEqual([
      200,
      'text/plain; charset=utf-8',
      'epoch 1 loss 0.53\nepoch 2 loss 0.41\n',
    ]);
  });

  it('POST /v1/jobs/:id/cancel answers 202 with the job state', async () => {
    const { app, service } = api();
    await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    const r = await app.inject({ method: 'POST', url: '/v1/jobs/train-1/cancel' });
    expect([r.statusCode, r.json()]).toEqual([202, { id: 'train-1', state: 'cancelled' }]);
    expect((await service.get('train-1')).state).toBe('cancelled');
  });

  it('GET /v1/nodes and /v1/datasets/:name answer what the service knows (names with / encoded)', async () => {
    const { app } = api();
    const nodes = await app.inject({ url: '/v1/nodes' });
    expect([nodes.statusCode, nodes.json()]).toEqual([200, { nodes: NODES }]);
    const ds = await app.inject({ url: `/v1/datasets/${encodeURIComponent('fmnist/train')}` });
    expect([ds.statusCode, ds.json()]).toEqual([200, DATASETS[0]]);
    const missing = await app.inject({ url: '/v1/datasets/nope' });
    expect([missing.statusCode, missing.json()]).toEqual([
      404,
      { code: 'ERR_NAME_NOT_FOUND', message: 'no dataset is named "nope"' },
    ]);
  });

  it('echoes a client x-request-id, and makes one up otherwise', async () => {
    const { app } = api();
    const given = await app.inject({ url: '/v1/nodes', headers: { 'x-request-id': 'req-42' } });
    expect(given.headers['x-request-id']).toBe('req-42');
    const made = await app.inject({ url: '/v1/nodes' });
    expect(made.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const hostile = await app.inject({ url: '/v1/nodes', headers: { 'x-request-id': 'a b\u0000' } });
    expect(hostile.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('jobs API event stream', () => {
  async function finishedJob(t: TestApi) {
    await t.app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    t.service.emit('train-1', 'state', { state: 'running' });
    t.service.emit('train-1', 'progress', { epoch: 1, loss: 0.5 });
    t.service.emit('train-1', 'log', { line: 'epoch 1 done' });
    t.service.emit('train-1', 'state', { state: 'succeeded' });
    // after the final state: never sent, the stream has ended
    t.service.emit('train-1', 'log', { line: 'late' });
    return t.service.eventsOf('train-1');
  }

  it('streams every event with its id, type and data, and ends after the final state', async () => {
    const t = api();
    const events = await finishedJob(t);
    const r = await t.app.inject({ url: '/v1/jobs/train-1/events' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(r.headers['cache-control']).toBe('no-cache, no-transform');
    expect(parseSse(r.body)).toEqual(asSse(events.slice(0, 5)));
    expect(r.body.split('\n\n')[0]).toBe('id: 1\nevent: state\ndata: {"state":"queued"}');
  });

  it('Last-Event-ID resumes with exactly the events after it', async () => {
    const t = api();
    const events = await finishedJob(t);
    const r = await t.app.inject({ url: '/v1/jobs/train-1/events', headers: { 'last-event-id': events[2]!.id } });
    expect(parseSse(r.body)).toEqual(asSse(events.slice(3, 5)));
    expect(t.service.afterIds).toEqual([events[2]!.id]);
  });

  it('follows a live job until its final state', async () => {
    const t = api();
    await t.app.inject({ method: 'POST', url: '/v1/jobs', payload: MAP });
    const reply = t.app.inject({ url: '/v1/jobs/job-1/events' });
    await new Promise((r) => setTimeout(r, 50));
    t.service.emit('job-1', 'state', { state: 'running' });
    t.service.emit('job-1', 'task', {
      index: 0,
      node: 'node-b',
      state: 'succeeded',
      attempts: 1,
      bytesLocal: 1000,
      bytesMoved: 0,
    });
    t.service.emit('job-1', 'state', {
      state: 'failed',
      error: { code: 'ERR_WORKER_FAILED', message: 'handler exited' },
    });
    const r = await reply;
    expect(parseSse(r.body)).toEqual(asSse(t.service.eventsOf('job-1')));
    expect(t.service.signals.map((s) => s.aborted)).toEqual([false]);
  });

  it('a failure after the stream began is sent as an error event and ends it', async () => {
    const t = api();
    await t.app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    const r = await t.app.inject({ url: '/v1/jobs/train-1/events', headers: { 'last-event-id': 'no-such-event' } });
    expect(r.statusCode).toBe(200);
    expect(parseSse(r.body)).toEqual([
      {
        event: 'error',
        data: JSON.stringify({ code: 'ERR_BAD_REQUEST', message: 'job train-1 has no event no-such-event' }),
      },
    ]);
  });

  it('an unknown job answers 404 ERR_JOB_NOT_FOUND before any stream begins', async () => {
    const t = api();
    const r = await t.app.inject({ url: '/v1/jobs/nope/events' });
    expect([r.statusCode, r.headers['content-type'], r.json()]).toEqual([
      404,
      'application/json; charset=utf-8',
      { code: 'ERR_JOB_NOT_FOUND', message: 'no job "nope"' },
    ]);
    expect(t.service.signals).toEqual([]);
  });
});

describe('jobs API refusals', () => {
  const base = { kind: 'train', dataset: 'd', model: { kind: 'softmax' } };
  const invalid: [string, unknown, string][] = [
    ['missing kind', { dataset: 'd' }, 'body is missing the field "kind" (one of "train", "map", "infer")'],
    [
      'unknown kind',
      { kind: 'sort', dataset: 'd' },
      'Expected body.kind to be one of "train", "map", "infer" but received string "sort"',
    ],
    ['unknown field', { ...base, epoch: 5 }, 'body has an unknown field "epoch"'],
    ['epochs 0', { ...base, epochs: 0 }, 'Expected body.epochs to be >= 1 but received number 0'],
    [
      'epochs not an integer',
      { ...base, epochs: 1.5 },
      'Expected body.epochs to be of type integer but received number 1.5',
    ],
    [
      'epochs as a string',
      { ...base, epochs: '5' },
      'Expected body.epochs to be of type integer but received string "5"',
    ],
    ['batchSize 0', { ...base, batchSize: 0 }, 'Expected body.batchSize to be >= 1 but received number 0'],
    [
      'negative learning rate',
      { ...base, learningRate: -0.1 },
      'Expected body.learningRate to be > 0 but received number -0.1',
    ],
    ['zero learning rate', { ...base, learningRate: 0 }, 'Expected body.learningRate to be > 0 but received number 0'],
    [
      'hidden sizes not integers',
      { ...base, model: { kind: 'mlp', hidden: [128, 0.5] } },
      'Expected body.model.hidden[1] to be of type integer but received number 0.5',
    ],
    [
      'no hidden layers',
      { ...base, model: { kind: 'mlp', hidden: [] } },
      'Expected body.model.hidden to be an array of at least 1 items but received array of length 0',
    ],
    [
      'empty dataset name',
      { kind: 'map', dataset: '', handler: 'h' },
      'Expected body.dataset to be a string of at least 1 characters but received string ""',
    ],
    [
      'hidden size 0',
      { ...base, model: { kind: 'mlp', hidden: [0] } },
      'Expected body.model.hidden[0] to be >= 1 but received number 0',
    ],
    ['mlp without hidden', { ...base, model: { kind: 'mlp' } }, 'body.model is missing the field "hidden"'],
    [
      'unknown model kind',
      { ...base, model: { kind: 'cnn' } },
      'Expected body.model.kind to be one of "softmax", "mlp" but received string "cnn"',
    ],
    ['train without model', { kind: 'train', dataset: 'd' }, 'body is missing the field "model"'],
    ['train without dataset', { kind: 'train', model: { kind: 'softmax' } }, 'body is missing the field "dataset"'],
    [
      "id with ':'",
      { ...base, id: 'a:b' },
      'Expected body.id to be a string matching ^[A-Za-z0-9._-]{1,128}$ but received string "a:b"',
    ],
    [
      'priority out of range',
      { ...base, priority: 1000 },
      'Expected body.priority to be <= 100 but received number 1000',
    ],
    [
      'maxRetries out of range',
      { ...base, maxRetries: 11 },
      'Expected body.maxRetries to be <= 10 but received number 11',
    ],
    ['timeoutMs 0', { ...base, timeoutMs: 0 }, 'Expected body.timeoutMs to be >= 1 but received number 0'],
    ['map without handler', { kind: 'map', dataset: 'd' }, 'body is missing the field "handler"'],
    [
      'map handler with a path',
      { kind: 'map', dataset: 'd', handler: '../etc/x' },
      'Expected body.handler to be a string matching ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ but received string "../etc/x"',
    ],
    ['infer without model', { kind: 'infer', dataset: 'd' }, 'body is missing the field "model"'],
    [
      'infer with a train model',
      { kind: 'infer', dataset: 'd', model: { kind: 'softmax' } },
      'Expected body.model to be of type string but received object Object',
    ],
    ['a spec that is an array', [base], 'Expected body to be of type object but received array of length 1'],
  ];

  for (const [what, body, message] of invalid) {
    it(`an invalid spec (${what}) answers 400 ERR_BAD_REQUEST and submits nothing`, async () => {
      const { app, service } = api();
      const r = await app.inject({ method: 'POST', url: '/v1/jobs', payload: body as object });
      expect([r.statusCode, r.json()]).toEqual([400, { code: 'ERR_BAD_REQUEST', message }]);
      expect(service.submitted).toEqual([]);
    });
  }

  it('an unknown job id answers 404 ERR_JOB_NOT_FOUND on every job route', async () => {
    const { app } = api();
    const err = { code: 'ERR_JOB_NOT_FOUND', message: 'no job "nope"' };
    for (const [method, url] of [
      ['GET', '/v1/jobs/nope'],
      ['GET', '/v1/jobs/nope/logs'],
      ['POST', '/v1/jobs/nope/cancel'],
    ] as const) {
      const r = await app.inject({ method, url });
      expect([method, url, r.statusCode, r.json()]).toEqual([method, url, 404, err]);
    }
  });

  it('a body over the limit answers 413 ERR_PAYLOAD_TOO_LARGE', async () => {
    const { app, service } = api({ bodyLimit: 1024 });
    const r = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...MAP, args: 'x'.repeat(2000) } });
    expect([r.statusCode, r.json()]).toEqual([
      413,
      { code: 'ERR_PAYLOAD_TOO_LARGE', message: 'the request body is larger than the server accepts (1024 bytes)' },
    ]);
    expect(service.submitted).toEqual([]);
  });

  it('a body that is not JSON answers 415 ERR_UNSUPPORTED_MEDIA_TYPE', async () => {
    const { app, service } = api();
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream']) {
      const r = await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { 'content-type': type },
        payload: 'kind=train',
      });
      expect([type, r.statusCode, r.json()]).toEqual([
        type,
        415,
        {
          code: 'ERR_UNSUPPORTED_MEDIA_TYPE',
          message: 'the request body must be JSON (content-type: application/json)',
        },
      ]);
    }
    expect(service.submitted).toEqual([]);
  });

  it('malformed or empty JSON answers 400 ERR_BAD_REQUEST', async () => {
    const { app, service } = api();
    const json = { 'content-type': 'application/json' };
    const bad = await app.inject({ method: 'POST', url: '/v1/jobs', headers: json, payload: '{"kind": "train",' });
    expect([bad.statusCode, bad.json()]).toEqual([
      400,
      { code: 'ERR_BAD_REQUEST', message: "Body is not valid JSON but content-type is set to 'application/json'" },
    ]);
    const empty = await app.inject({ method: 'POST', url: '/v1/jobs', headers: json, payload: '' });
    expect([empty.statusCode, empty.json()]).toEqual([
      400,
      { code: 'ERR_BAD_REQUEST', message: "Body cannot be empty when content-type is set to 'application/json'" },
    ]);
    const none = await app.inject({ method: 'POST', url: '/v1/jobs' });
    expect([none.statusCode, none.json()]).toEqual([
      400,
      { code: 'ERR_BAD_REQUEST', message: 'Expected body to be of type object but received null' },
    ]);
    expect(service.submitted).toEqual([]);
  });

  it('bad querystrings, params and headers answer 400 ERR_BAD_REQUEST', async () => {
    const { app, service } = api();
    const cases: [string, Record<string, string>, string][] = [
      [
        '/v1/jobs?state=done',
        {},
        'Expected querystring.state to be one of "queued", "running", "succeeded", "failed", "cancelled" but received string "done"',
      ],
      ['/v1/jobs?limit=0', {}, 'Expected querystring.limit to be >= 1 but received number 0'],
      ['/v1/jobs?limit=ten', {}, 'Expected querystring.limit to be of type integer but received string "ten"'],
      ['/v1/jobs?sort=asc', {}, 'querystring has an unknown field "sort"'],
      [
        '/v1/jobs/a:b',
        {},
        'Expected params.id to be a string matching ^[A-Za-z0-9._-]{1,128}$ but received string "a:b"',
      ],
      [
        '/v1/jobs/x/events',
        { 'last-event-id': 'x'.repeat(300) },
        'Expected headers.last-event-id to be a string of at most 256 characters but received string "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"',
      ],
    ];
    for (const [url, headers, message] of cases) {
      const r = await app.inject({ url, headers });
      expect([url, r.statusCode, r.json()]).toEqual([url, 400, { code: 'ERR_BAD_REQUEST', message }]);
    }
    expect(service.filters).toEqual([]);
  });

  it('an unknown route answers 404 ERR_ROUTE_NOT_FOUND', async () => {
    const { app } = api();
    const r = await app.inject({ method: 'DELETE', url: '/v1/jobs/x?force=1' });
    expect([r.statusCode, r.json()]).toEqual([
      404,
      { code: 'ERR_ROUTE_NOT_FOUND', message: 'no route DELETE /v1/jobs/x' },
    ]);
  });

  it('with a token, a missing or wrong one answers 401 ERR_UNAUTHORIZED and nothing is submitted', async () => {
    const { app, service } = api({ token: TOKEN });
    const missing = await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN });
    expect([missing.statusCode, missing.headers['www-authenticate'], missing.json()]).toEqual([
      401,
      'Bearer',
      { code: 'ERR_UNAUTHORIZED', message: 'this API wants an Authorization: Bearer <token> header' },
    ]);
    for (const authorization of [`Bearer ${TOKEN}x`, 'Bearer short', `Basic ${TOKEN}`, TOKEN]) {
      const r = await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN, headers: { authorization } });
      expect([authorization, r.statusCode, r.json().code]).toEqual([authorization, 401, 'ERR_UNAUTHORIZED']);
    }
    const events = await app.inject({ url: '/v1/jobs/train-1/events' });
    expect([events.statusCode, events.json().code]).toEqual([401, 'ERR_UNAUTHORIZED']);
    expect(service.submitted).toEqual([]);
    const ok = await app.inject({ method: 'POST', url: '/v1/jobs', payload: TRAIN, headers: AUTH });
    expect([ok.statusCode, ok.json()]).toEqual([201, { id: 'train-1', state: 'queued' }]);
    const open = await app.inject({ url: '/openapi.json' });
    expect(open.statusCode).toBe(200);
  });

  it('an error without a code answers 500 ERR_INTERNAL, without its details', async () => {
    const { app, service } = api();
    service.nodes = async () => {
      throw new Error('secret internals');
    };
    const r = await app.inject({ url: '/v1/nodes' });
    expect([r.statusCode, r.json()]).toEqual([
      500,
      { code: 'ERR_INTERNAL', message: 'the API failed unexpectedly; the server log has the details' },
    ]);
  });

  it('the service’s TrellisErrors answer with their code and its status', async () => {
    const { app, service } = api();
    const { TrellisError } = await import('../dist/src/errors.js');
    service.list = async () => {
      throw new TrellisError('ERR_QUEUE_UNAVAILABLE', 'redis did not answer');
    };
    const r = await app.inject({ url: '/v1/jobs' });
    expect([r.statusCode, r.json()]).toEqual([503, { code: 'ERR_QUEUE_UNAVAILABLE', message: 'redis did not answer' }]);
  });
});

describe('OpenAPI document', () => {
  it('lists every route with its schemas, JobSpec among the components', async () => {
    const { app } = api({ token: TOKEN });
    const doc = (await app.inject({ url: '/openapi.json' })).json();
    expect(doc.openapi).toBe('3.0.3');
    const routes = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(routes.sort()).toEqual(
      [
        'POST /v1/jobs',
        'GET /v1/jobs',
        'GET /v1/jobs/{id}',
        'GET /v1/jobs/{id}/events',
        'GET /v1/jobs/{id}/logs',
        'POST /v1/jobs/{id}/cancel',
        'GET /v1/nodes',
        'GET /v1/datasets',
        'GET /v1/datasets/{name}',
        'GET /metrics',
        'GET /healthz',
        'GET /readyz',
        'GET /v1/dashboard/events',
        'GET /',
      ].sort(),
    );
    const post = doc.paths['/v1/jobs'].post;
    expect(post.requestBody.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/JobSpec' });
    expect(Object.keys(post.responses).sort()).toEqual(['200', '201', '4XX', '5XX']);
    expect(post.responses['201'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/JobRef' });
    expect(doc.paths['/v1/jobs/{id}'].get.responses['200'].content['application/json'].schema).toEqual({
      $ref: '#/components/schemas/Job',
    });
    expect(Object.keys(doc.paths['/v1/jobs/{id}/events'].get.responses['200'].content)).toEqual(['text/event-stream']);
    expect(doc.paths['/v1/jobs'].get.parameters.map((p: { in: string; name: string }) => `${p.in}:${p.name}`)).toEqual([
      'query:state',
      'query:kind',
      'query:limit',
    ]);
    const schemas = doc.components.schemas;
    expect(schemas.JobSpec.oneOf).toEqual([
      { $ref: '#/components/schemas/TrainJobSpec' },
      { $ref: '#/components/schemas/MapJobSpec' },
      { $ref: '#/components/schemas/InferJobSpec' },
    ]);
    expect(schemas.JobSpec.discriminator).toEqual({ propertyName: 'kind' });
    expect(schemas.TrainJobSpec.additionalProperties).toBe(false);
    expect(schemas.TrainJobSpec.properties.epochs).toEqual({ type: 'integer', minimum: 1, maximum: 10000 });
    expect(Object.keys(schemas).sort()).toEqual([
      'DatasetInfo',
      'DatasetList',
      'ErrorReply',
      'InferJobSpec',
      'Job',
      'JobEventData',
      'JobList',
      'JobProgress',
      'JobRef',
      'JobResult',
      'JobSpec',
      'MapJobSpec',
      'ModelSpec',
      'NodeInfo',
      'NodeList',
      'StepTimes',
      'TaskInfo',
      'TrainJobSpec',
    ]);
    expect(doc.security).toEqual([{ bearer: [] }]);
  });
});
