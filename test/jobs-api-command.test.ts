/**
 * `trellis api`'s command body (runApi) with the engine factory passed in as
 * one returning the in-memory service: it builds the service through startJobService with
 * its options, logs the listening line with a URL that answers, and on the
 * stop signal closes the server (open streams included) and then the service.
 * The real process (signals, exit status) is covered by jobs-cli.test.ts.
 */
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { runApi } from '../dist/src/cli/api-command.js';
import { findLogLine } from '../dist/src/index.js';
import { ApiClient } from '../dist/src/jobs/api/api-client.js';
import { errCode, eventually } from './helpers/child.js';
import { TOKEN, TRAIN } from './helpers/jobs-api.js';
import { MemoryJobService } from './helpers/memory-job-service.js';

/** A pino logger whose JSON lines land in `lines`, as `trellis api` writes them to stdout. */
function capturingLogger() {
  const lines: string[] = [];
  const logger = pino({ name: 'trellis-api' }, { write: (l: string) => void lines.push(l) });
  return { logger, lines };
}

const listening = (lines: string[]) => findLogLine(lines.join(''), 'listening');

describe('trellis api (runApi)', () => {
  it('serves the service from startJobService, prints its URL, and closes server then service on stop', async () => {
    const memory = new MemoryJobService();
    const startService = vi.fn(async () => memory);
    const { logger, lines } = capturingLogger();
    let stop!: (sig: string) => void;
    const running = runApi(
      {
        port: 0,
        host: '127.0.0.1',
        redis: 'redis://127.0.0.1:6379',
        meta: 'local',
        socket: '/tmp/s.sock',
        token: TOKEN,
      },
      { stop: new Promise((r) => (stop = r)), logger, startService },
    );
    await eventually(() => listening(lines) !== undefined, 'the listening line');
    const line = listening(lines)!;
    expect(line).toMatchObject({ level: 30, name: 'trellis-api', pid: process.pid, auth: 'token' });
    const url = line.url as string;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(startService.mock.calls).toEqual([
      [{ redis: 'redis://127.0.0.1:6379', meta: 'local', socket: '/tmp/s.sock', token: TOKEN, logger }],
    ]);
    const api = new ApiClient({ url, token: TOKEN });
    expect(await api.submit(TRAIN)).toEqual({ id: 'train-1', state: 'queued', created: true });
    const stream = (async () => {
      for await (const _ of api.events('train-1', { reconnect: false }));
    })();
    await eventually(() => memory.signals.length === 1, 'the stream open');
    stop('SIGTERM');
    await running;
    expect(await errCode(stream)).toBe('ERR_DISCONNECTED');
    expect(memory.signals[0]!.aborted).toBe(true);
    expect(memory.closed).toBe(true);
    expect(await errCode(api.list())).toBe('ERR_DISCONNECTED');
  });

  it("gives the engine the stores' own RPC token and etcd prefix when told, the API keeping its own token", async () => {
    const memory = new MemoryJobService();
    const startService = vi.fn(async () => memory);
    const { logger, lines } = capturingLogger();
    let stop!: (sig: string) => void;
    const storeToken = 's'.repeat(32);
    const running = runApi(
      {
        port: 0,
        host: '127.0.0.1',
        redis: 'redis://127.0.0.1:6379',
        meta: 'etcd://127.0.0.1:2379',
        metaPrefix: '/trellis/other',
        token: TOKEN,
        storeToken,
      },
      { stop: new Promise((r) => (stop = r)), logger, startService },
    );
    await eventually(() => listening(lines) !== undefined, 'the listening line');
    expect(startService.mock.calls).toEqual([
      [
        {
          redis: 'redis://127.0.0.1:6379',
          meta: 'etcd://127.0.0.1:2379',
          metaPrefix: '/trellis/other',
          socket: undefined,
          token: storeToken,
          logger,
        },
      ],
    ]);
    const url = listening(lines)!.url as string;
    expect(await new ApiClient({ url, token: TOKEN }).list()).toEqual([]); // the API's own token still opens it
    expect(await errCode(new ApiClient({ url, token: storeToken }).list())).toBe('ERR_UNAUTHORIZED');
    stop('SIGTERM');
    await running;
  });
});
