/**
 * The jobs API over an in-memory JobService, for the API's own tests:
 * `injectApi` for handler tests through inject(), `listenApi` for a real
 * socket on a free port. Sample specs of each kind, and the SSE text of a
 * reply parsed back into events with the client's own parser.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../dist/src/jobs/api/build-api.js';
import { type SseMessage, SseParser } from '../../dist/src/jobs/api/sse.js';
import type { InferJobSpec, JobEvent, MapJobSpec, TrainJobSpec } from '../../dist/src/jobs/job-types.js';
import { MemoryJobService } from './memory-job-service.js';

export const TOKEN = 'a-test-token-of-24-chars';
export const AUTH = { authorization: `Bearer ${TOKEN}` };

export const TRAIN: TrainJobSpec = {
  id: 'train-1',
  kind: 'train',
  dataset: 'fmnist/train',
  evalDataset: 'fmnist/test',
  model: { kind: 'mlp', hidden: [256, 128] },
  epochs: 3,
  batchSize: 64,
  learningRate: 0.1,
  ranks: 1,
  priority: 5,
  timeoutMs: 60_000,
  maxRetries: 1,
};
export const MAP: MapJobSpec = {
  kind: 'map',
  dataset: 'fmnist/train',
  handler: 'sum',
  args: { scale: 2, tags: ['a'] },
  output: 'sums',
};
export const INFER: InferJobSpec = {
  id: 'infer-1',
  kind: 'infer',
  dataset: 'fmnist/test',
  model: 'models/mlp',
  output: 'preds',
};

export interface TestApi {
  app: FastifyInstance;
  service: MemoryJobService;
}

export function injectApi(opts: { token?: string; bodyLimit?: number } = {}): TestApi {
  const service = new MemoryJobService();
  return { service, app: buildApi({ service, ...opts }) };
}

export async function listenApi(opts: { token?: string } = {}): Promise<TestApi & { url: string }> {
  const t = injectApi(opts);
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  return { ...t, url: `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}` };
}

export function parseSse(text: string): SseMessage[] {
  return new SseParser().push(text);
}

/** The SSE messages the API writes for these events. */
export function asSse(events: JobEvent[]): SseMessage[] {
  return events.map((e) => ({ id: e.id, event: e.type, data: JSON.stringify(e.data) }));
}
