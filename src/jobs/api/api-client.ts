/**
 * The client side of the jobs HTTP API, over Node's fetch: `trellis jobs`,
 * the demo and the tests use it. Replies are checked against the same schemas
 * the server answers with (schema-set.ts), so a server that breaks the
 * contract fails here with ERR_PROTOCOL instead of deep inside a caller, and
 * `{ code, message }` errors come back as the TrellisError they were.
 *
 * An https API with its own CA: give `tls: { ca }` (and `cert`, `key` when
 * it wants client certificates); requests then go through undici's fetch
 * with an agent that trusts that CA. A certificate that fails the check is
 * ERR_TLS_HANDSHAKE, files that cannot be used are ERR_TLS_CONFIG.
 *
 * ```ts
 * const api = new ApiClient({ url: 'http://127.0.0.1:7080', token });
 * const { id } = await api.submit({ kind: 'train', dataset: 'fmnist/train', model: { kind: 'softmax' } });
 * for await (const ev of api.events(id)) if (ev.type === 'progress') console.log(ev.data.loss);
 * ```
 */
import type { ValidateFunction } from 'ajv';
import { Agent, fetch as undiciFetch } from 'undici';
import { type ErrorPayload, TrellisError } from '../../errors.js';
import { clientTlsOptions, isTlsError, loadTls, type TlsFiles, tlsFailure } from '../../tls-config.js';
import {
  type DatasetInfo,
  FINAL_STATES,
  type Job,
  type JobEvent,
  type JobFilter,
  type JobSpec,
  type JobState,
  type NodeInfo,
} from '../job-types.js';
import { createAjv } from '../schema/schema-set.js';
import { validationMessage } from '../schema/validation-message.js';
import { SseParser } from './sse.js';

export interface ApiClientOptions {
  /** Base URL, e.g. http://127.0.0.1:7080 (a path prefix is kept). */
  url: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Limit for each request other than the event stream (default 30 s). */
  timeoutMs?: number;
  /** PEM files: the CA to trust for https (else the system's), a client certificate and key for mutual TLS. */
  tls?: TlsFiles;
}

export interface JobRef {
  id: string;
  state: JobState;
}

export interface EventsOptions {
  /** Resume after this event id (what the last event seen carried). */
  lastEventId?: string;
  /** Ends the stream early; the iterator then just returns. */
  signal?: AbortSignal;
  /**
   * Reconnect with Last-Event-ID when the connection drops before the final
   * state (default true): the stream resumes exactly after the last event seen.
   */
  reconnect?: boolean;
}

/** The `event:` names this client reads (JobEventData, plus the API's own `error`); others are skipped. */
const KNOWN_EVENTS = new Set(['state', 'progress', 'task', 'log', 'error']);

/** Reconnects in a row without an event in between before the stream gives up (at 250 ms, 500 ms, ... 4 s). */
const MAX_RECONNECTS = 5;

type Validators = Record<
  'JobRef' | 'Job' | 'JobList' | 'NodeList' | 'DatasetInfo' | 'DatasetList' | 'ErrorReply' | 'JobEventData',
  ValidateFunction
>;
let validators: Validators | undefined;

/** Compiled on first use and shared by every client: compiling the Job schema takes milliseconds. */
function check(): Validators {
  if (!validators) {
    const ajv = createAjv(false);
    const get = (id: string) => ajv.getSchema(id)!;
    validators = {
      JobRef: get('JobRef'),
      Job: get('Job'),
      JobList: get('JobList'),
      NodeList: get('NodeList'),
      DatasetInfo: get('DatasetInfo'),
      DatasetList: get('DatasetList'),
      ErrorReply: get('ErrorReply'),
      JobEventData: get('JobEventData'),
    };
  }
  return validators;
}

export class ApiClient {
  private readonly base: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetch: typeof globalThis.fetch;

  constructor(opts: ApiClientOptions) {
    let url: URL;
    try {
      url = new URL(opts.url);
    } catch {
      throw new TrellisError('ERR_BAD_REQUEST', `the API URL ${JSON.stringify(opts.url)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TrellisError('ERR_BAD_REQUEST', `the API URL must be http: or https:, got ${url.protocol}`);
    }
    this.base = url.href.replace(/\/+$/, '');
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    if (opts.tls === undefined) {
      this.fetch = globalThis.fetch;
    } else {
      if (url.protocol !== 'https:') {
        throw new TrellisError('ERR_TLS_CONFIG', `TLS files were given but the API URL ${url.href} is not https:`);
      }
      const agent = new Agent({ connect: clientTlsOptions(loadTls(opts.tls, 'client')) });
      // undici's own fetch with its own agent: Node 20's built-in fetch bundles another undici.
      this.fetch = ((input: string, init: RequestInit) =>
        undiciFetch(input, { ...(init as object), dispatcher: agent })) as unknown as typeof globalThis.fetch;
    }
  }

  /** Submits a job; `created` is false when a job with the spec's id existed (that job is answered). */
  async submit(spec: JobSpec): Promise<JobRef & { created: boolean }> {
    const { status, body } = await this.json('POST', '/v1/jobs', 'JobRef', spec);
    return { ...(body as JobRef), created: status === 201 };
  }

  async list(filter: JobFilter = {}): Promise<Job[]> {
    const q = new URLSearchParams();
    if (filter.state !== undefined) q.set('state', filter.state);
    if (filter.kind !== undefined) q.set('kind', filter.kind);
    if (filter.limit !== undefined) q.set('limit', String(filter.limit));
    const qs = q.size > 0 ? `?${q}` : '';
    return ((await this.json('GET', `/v1/jobs${qs}`, 'JobList')).body as { jobs: Job[] }).jobs;
  }

  async get(id: string): Promise<Job> {
    return (await this.json('GET', `/v1/jobs/${encodeURIComponent(id)}`, 'Job')).body as Job;
  }

  /** Asks the job to stop; the answer is its state when the request was recorded. */
  async cancel(id: string): Promise<JobRef> {
    return (await this.json('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`, 'JobRef')).body as JobRef;
  }

  async logs(id: string): Promise<string> {
    const path = `/v1/jobs/${encodeURIComponent(id)}/logs`;
    const res = await this.request(
      'GET',
      path,
      { accept: 'text/plain' },
      undefined,
      AbortSignal.timeout(this.timeoutMs),
    );
    return this.read(res, () => res.text());
  }

  async nodes(): Promise<NodeInfo[]> {
    return ((await this.json('GET', '/v1/nodes', 'NodeList')).body as { nodes: NodeInfo[] }).nodes;
  }

  /** Every named dataset, by name (at most `limit`, default 100). */
  async datasets(limit?: number): Promise<DatasetInfo[]> {
    const qs = limit === undefined ? '' : `?limit=${limit}`;
    return ((await this.json('GET', `/v1/datasets${qs}`, 'DatasetList')).body as { datasets: DatasetInfo[] }).datasets;
  }

  async dataset(name: string): Promise<DatasetInfo> {
    return (await this.json('GET', `/v1/datasets/${encodeURIComponent(name)}`, 'DatasetInfo')).body as DatasetInfo;
  }

  /**
   * The job's events from the start (or after `lastEventId`), then live ones;
   * ends after the event carrying a final state. An `error` event from the
   * server (the stream failed after it began) is thrown as its TrellisError.
   */
  async *events(id: string, opts: EventsOptions = {}): AsyncGenerator<JobEvent> {
    let lastId = opts.lastEventId;
    let failures = 0;
    for (;;) {
      if (opts.signal?.aborted) return;
      const ac = new AbortController();
      const stop = () => ac.abort();
      opts.signal?.addEventListener('abort', stop);
      try {
        let res: Response;
        try {
          res = await this.request(
            'GET',
            `/v1/jobs/${encodeURIComponent(id)}/events`,
            {
              accept: 'text/event-stream',
              ...(lastId === undefined ? {} : { 'last-event-id': lastId }),
            },
            undefined,
            ac.signal,
          );
        } catch (e) {
          if (opts.signal?.aborted) return;
          if (
            (e as TrellisError).code !== 'ERR_DISCONNECTED' ||
            opts.reconnect === false ||
            ++failures > MAX_RECONNECTS
          )
            throw e;
          await backoff(failures, opts.signal);
          continue;
        }
        if (!res.ok) await this.read(res, async () => undefined); // throws the API's error
        const parser = new SseParser();
        const decoder = new TextDecoder();
        try {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            for (const m of parser.push(decoder.decode(chunk, { stream: true }))) {
              const ev = this.event(m.event, m.id, m.data);
              failures = 0;
              lastId = m.id ?? lastId;
              if (!ev) continue;
              yield ev;
              if (ev.type === 'state' && FINAL_STATES.includes(ev.data.state)) return;
            }
          }
        } catch (e) {
          if (opts.signal?.aborted) return;
          if (e instanceof TrellisError) throw e;
          // the connection broke mid-stream: fall through to reconnecting
        }
        if (opts.signal?.aborted) return;
        if (opts.reconnect === false || ++failures > MAX_RECONNECTS) {
          throw new TrellisError('ERR_DISCONNECTED', `the event stream of job ${id} ended before its final state`);
        }
        await backoff(failures, opts.signal);
      } finally {
        opts.signal?.removeEventListener('abort', stop);
        ac.abort(); // an early break by the caller must close the connection
      }
    }
  }

  /** The event checked against its schema; undefined for a type this client does not know (a newer server's). */
  private event(type: string, id: string | undefined, text: string): JobEvent | undefined {
    if (!KNOWN_EVENTS.has(type)) return undefined;
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new TrellisError('ERR_PROTOCOL', `the API sent an ${type} event whose data is not JSON`);
    }
    const v = check().JobEventData;
    if (!v({ [type]: data }))
      throw new TrellisError('ERR_PROTOCOL', `the API sent a bad event: ${validationMessage('event', v.errors)}`);
    if (type === 'error') throw TrellisError.fromPayload(data as ErrorPayload);
    if (id === undefined) throw new TrellisError('ERR_PROTOCOL', `the API sent a ${type} event without an id`);
    return { id, type, data } as JobEvent;
  }

  private async json(
    method: string,
    path: string,
    schema: keyof Validators,
    body?: unknown,
  ): Promise<{ status: number; body: unknown }> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    const res = await this.request(method, path, { accept: 'application/json' }, body, signal);
    const parsed = await this.read(res, () => res.json() as Promise<unknown>);
    const v = check()[schema];
    if (!v(parsed)) {
      throw new TrellisError(
        'ERR_PROTOCOL',
        `the API answered ${method} ${path} with ${validationMessage('a reply', v.errors)}`,
      );
    }
    return { status: res.status, body: parsed };
  }

  /** The reply's content for a 2xx, else the API's `{ code, message }` as a TrellisError. */
  private async read<T>(res: Response, content: () => Promise<T>): Promise<T> {
    if (res.ok) {
      try {
        return await content();
      } catch (e) {
        throw new TrellisError('ERR_PROTOCOL', `the API's reply could not be read: ${(e as Error).message}`);
      }
    }
    const text = await res.text().catch(() => '');
    let payload: unknown;
    try {
      payload = JSON.parse(text);
    } catch {
      payload = undefined;
    }
    if (check().ErrorReply(payload)) throw TrellisError.fromPayload(payload as ErrorPayload);
    throw new TrellisError('ERR_PROTOCOL', `the API answered HTTP ${res.status} without a { code, message } body`);
  }

  private async request(
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<Response> {
    const h: Record<string, string> = { ...headers };
    if (this.token !== undefined) h.authorization = `Bearer ${this.token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    try {
      return await this.fetch(this.base + path, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if ((e as Error).name === 'TimeoutError') {
        throw new TrellisError(
          'ERR_TIMEOUT',
          `the API at ${this.base} did not answer ${method} ${path} in ${this.timeoutMs} ms`,
        );
      }
      if ((e as Error).name === 'AbortError') throw e;
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      if (isTlsError(cause)) throw tlsFailure(`the API at ${this.base}`, cause);
      throw new TrellisError(
        'ERR_DISCONNECTED',
        `cannot reach the API at ${this.base}: ${cause?.code ?? cause?.message ?? (e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  }
}

function backoff(attempt: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, 125 * 2 ** Math.min(attempt, 5));
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}
