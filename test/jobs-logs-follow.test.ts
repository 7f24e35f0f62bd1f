/**
 * `trellis jobs logs -f` against a real deployment: a redis-server, a store,
 * `trellis api` and `trellis agent` as child processes. The follower starts
 * while the job is queued, prints every log line as the job runs, stays
 * attached while it runs, and exits 0 when the job reaches its final state.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, findLogLine, type TrellisClient } from '../dist/src/index.js';
import { ApiClient } from '../dist/src/jobs/api/api-client.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { eventually } from './helpers/child.js';
import { trellis } from './helpers/cli.js';
import { freshPrefix, killAgents, spawnAgent, sumDataset } from './helpers/jobs.js';
import { CLI, startStore, tempDir, untilReady } from './helpers/store.js';

describe('trellis jobs logs -f', () => {
  let redis: RedisServerHandle;
  let store: Awaited<ReturnType<typeof startStore>>;
  let client: TrellisClient;
  let api: ChildProcess;
  let url: string;
  let prefix: string;
  let dir: string;
  let cleanup: () => void;
  const env = { TRELLIS_TOKEN: '' };

  beforeAll(async () => {
    ({ dir, cleanup } = tempDir());
    redis = await startRedisServer();
    store = await startStore({ name: 'node-a' });
    client = await connect({ socket: store.socket });
    prefix = freshPrefix();
    api = spawn(
      process.execPath,
      [CLI, 'api', '--port', '0', '--redis', redis.url, '--socket', store.socket, '--prefix', prefix],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
    );
    const out = await untilReady(api, 'api', 'listening');
    url = String(findLogLine(out(), 'listening')!.url);
    await spawnAgent(store.socket, redis.url, prefix);
  });
  afterAll(async () => {
    await killAgents();
    await new Promise((r) => {
      api.once('exit', r);
      api.kill('SIGTERM');
    });
    await client.close();
    await store.stop();
    await redis.stop();
    cleanup();
  });

  it('follows a running job to its end, printing its log lines, and exits 0', async () => {
    await sumDataset(client, `${prefix}/ds`, 2);
    const gate = join(dir, 'gate');
    const submitted = await trellis(
      [
        'jobs',
        '--api',
        url,
        'submit',
        '--kind',
        'map',
        '--dataset',
        `${prefix}/ds`,
        '--handler',
        'gate',
        '--args',
        JSON.stringify({ gate }),
        '--id',
        'follow-1',
      ],
      env,
    );
    expect(submitted).toEqual({ code: 0, stdout: 'submitted follow-1 queued\n', stderr: '' });
    const follower = spawn(process.execPath, [CLI, 'jobs', 'logs', 'follow-1', '-f', '--api', url], {
      env: { ...process.env, ...env },
    });
    let out = '';
    let err = '';
    follower.stdout.on('data', (d) => (out += d));
    follower.stderr.on('data', (d) => (err += d));
    let ended = false;
    const exited = new Promise<number | null>((r) =>
      follower.once('exit', (code) => {
        ended = true;
        r(code);
      }),
    );
    // Both tasks have logged while the job still runs: the follower is still attached.
    await eventually(() => out.split('\n').filter((l) => l.includes('started')).length === 2, 'both tasks started');
    const during = await new ApiClient({ url }).get('follow-1');
    expect([during.state, ended]).toEqual(['running', false]);
    writeFileSync(gate, '');
    expect(await exited).toBe(0);
    const api = new ApiClient({ url });
    expect((await api.get('follow-1')).state).toBe('succeeded');
    // Every line of the job's log, as the API keeps it, and nothing else.
    const log = await api.logs('follow-1');
    expect(out).toBe(log);
    expect(log.split('\n').map((l) => l.replace(/^\S+ /, ''))).toEqual([
      expect.stringMatching(/^node-a task [01]: started o[0-9a-f]{16}$/),
      expect.stringMatching(/^node-a task [01]: started o[0-9a-f]{16}$/),
      expect.stringMatching(/^node-a task [01]: passed o[0-9a-f]{16}$/),
      expect.stringMatching(/^node-a task [01]: passed o[0-9a-f]{16}$/),
      '',
    ]);
    expect(err).toBe(
      'trellis: job follow-1 queued: waiting for the scheduler\ntrellis: job follow-1 running\ntrellis: job follow-1 succeeded\n',
    );
  });
});
