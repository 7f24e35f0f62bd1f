/**
 * `trellis jobs …` and `trellis api` as an operator runs them: child
 * processes of bin/trellis.js (the built package) against a listening API
 * over an in-memory JobService, checking what they print, what reached the
 * service, and the documented exit codes.
 */
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from './helpers/child.js';
import { listenApi, MAP, TOKEN } from './helpers/jobs-api.js';
import { CREATED_AT } from './helpers/memory-job-service.js';
import { CLI, tempDir } from './helpers/store.js';

const exec = promisify(execFile);

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function setup() {
  const t = await listenApi({ token: TOKEN });
  cleanups.push(() => t.app.close());
  const { dir, cleanup } = tempDir();
  cleanups.push(cleanup);
  const env = { ...process.env, TRELLIS_API: t.url, TRELLIS_TOKEN: TOKEN };
  /** Runs `trellis jobs ...`; resolves with its exit code and output either way. */
  const jobs = async (args: string[], extraEnv: Record<string, string> = {}) => {
    try {
      const r = await exec(process.execPath, [CLI, 'jobs', ...args], { env: { ...env, ...extraEnv } });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, stdout: err.stdout, stderr: err.stderr };
    }
  };
  return { ...t, dir, jobs };
}

describe('trellis jobs', () => {
  it('submit from flags, then from a file; the same id again says it exists', async () => {
    const { jobs, service, dir } = await setup();
    const a = await jobs([
      'submit',
      '--kind',
      'train',
      '--dataset',
      'fmnist/train',
      '--id',
      'cli-1',
      '--hidden',
      '64,32',
      '--epochs',
      '2',
      '--learning-rate',
      '0.05',
    ]);
    expect(a).toEqual({ code: 0, stdout: 'submitted cli-1 queued\n', stderr: '' });
    const file = join(dir, 'map.json');
    writeFileSync(file, JSON.stringify({ ...MAP, id: 'cli-2' }));
    const b = await jobs(['submit', file, '--json']);
    expect([b.code, JSON.parse(b.stdout)]).toEqual([0, { id: 'cli-2', state: 'queued', created: true }]);
    const again = await jobs(['submit', file]);
    expect(again).toEqual({ code: 0, stdout: 'exists cli-2 queued\n', stderr: '' });
    expect(service.submitted).toEqual([
      {
        id: 'cli-1',
        kind: 'train',
        dataset: 'fmnist/train',
        model: { kind: 'mlp', hidden: [64, 32] },
        epochs: 2,
        learningRate: 0.05,
      },
      { ...MAP, id: 'cli-2' },
      { ...MAP, id: 'cli-2' },
    ]);
  });

  it('ls, show and cancel, for people and as JSON', async () => {
    const { jobs, service } = await setup();
    await service.submit({ ...MAP, id: 'm-1' });
    await service.submit({ id: 'i-1', kind: 'infer', dataset: 'fmnist/test', model: 'models/mlp' });
    service.emit('i-1', 'state', { state: 'running', reason: 'placed on node-a' });
    const ls = await jobs(['ls']);
    expect(ls).toEqual({
      code: 0,
      stdout: [
        'ID   KIND   STATE    CREATED                   DETAIL',
        `m-1  map    queued   ${CREATED_AT}`,
        `i-1  infer  running  ${CREATED_AT}  placed on node-a`,
        '',
      ].join('\n'),
      stderr: '',
    });
    const lsJson = await jobs(['ls', '--state', 'queued', '--json']);
    expect(JSON.parse(lsJson.stdout)).toEqual([await service.get('m-1')]);
    const show = await jobs(['show', 'i-1', '--json']);
    expect(JSON.parse(show.stdout)).toEqual(await service.get('i-1'));
    const human = await jobs(['show', 'm-1']);
    expect(human.stdout).toBe(
      [
        'id:       m-1',
        'kind:     map',
        'state:    queued',
        `created:  ${CREATED_AT}`,
        'dataset:  fmnist/train',
        '',
      ].join('\n'),
    );
    const cancel = await jobs(['cancel', 'm-1']);
    expect(cancel).toEqual({ code: 0, stdout: 'cancel requested m-1 cancelled\n', stderr: '' });
    expect((await service.get('m-1')).state).toBe('cancelled');
  });

  it('logs prints the log; logs -f follows the stream until the final state', async () => {
    const { jobs, service, url } = await setup();
    await service.submit({ ...MAP, id: 'm-1' });
    service.emit('m-1', 'log', { line: 'shard 0 done' });
    expect(await jobs(['logs', 'm-1'])).toEqual({ code: 0, stdout: 'shard 0 done\n', stderr: '' });

    const child = spawn(process.execPath, [CLI, 'jobs', 'logs', 'm-1', '-f', '--api', url], {
      env: { ...process.env, TRELLIS_TOKEN: TOKEN },
    });
    cleanups.push(() => child.kill('SIGKILL'));
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    await eventually(() => out.includes('shard 0 done'), 'the log so far');
    service.emit('m-1', 'log', { line: 'shard 1 done' });
    service.emit('m-1', 'state', { state: 'succeeded' });
    expect(await exited).toBe(0);
    expect(out).toBe('shard 0 done\nshard 1 done\n');
    expect(err).toBe('trellis: job m-1 queued\ntrellis: job m-1 succeeded\n');
  });

  it('failures print trellis: CODE: message and exit with the documented codes', async () => {
    const { jobs, service, url, dir } = await setup();
    const notFound = await jobs(['show', 'nope']);
    expect(notFound).toEqual({ code: 3, stdout: '', stderr: 'trellis: ERR_JOB_NOT_FOUND: no job "nope"\n' });
    const badSpec = await jobs(['submit', '--kind', 'train', '--dataset', 'd', '--epochs', '0']);
    expect(badSpec).toEqual({
      code: 2,
      stdout: '',
      stderr: 'trellis: ERR_BAD_REQUEST: Expected body.epochs to be >= 1 but received number 0\n',
    });
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'a-wrong-token-of-24-chars\n');
    const wrong = await jobs(['ls', '--token-file', tokenFile]);
    expect(wrong).toEqual({ code: 4, stdout: '', stderr: 'trellis: ERR_UNAUTHORIZED: wrong token\n' });
    const none = await jobs(['ls'], { TRELLIS_TOKEN: '' });
    expect([none.code, none.stderr]).toEqual([
      4,
      'trellis: ERR_UNAUTHORIZED: this API wants an Authorization: Bearer <token> header\n',
    ]);
    const usage = await jobs(['show']);
    expect([usage.code, usage.stderr]).toEqual([2, "error: missing required argument 'id'\n"]);
    const both = await jobs(['submit']);
    expect([both.code, both.stderr]).toEqual([
      2,
      'trellis: ERR_BAD_REQUEST: give a spec FILE or --kind (with --dataset), not both\n',
    ]);
    const gone = await listenApi();
    await gone.app.close();
    const away = await jobs(['ls', '--api', gone.url]);
    expect([away.code, away.stderr]).toEqual([
      5,
      `trellis: ERR_DISCONNECTED: cannot reach the API at ${gone.url}: ECONNREFUSED\n`,
    ]);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(service.submitted).toEqual([]);
  });
});

describe('trellis api', () => {
  it('refuses to start without a store to read shard locations from (exit 1, the code on stderr)', async () => {
    const r = await exec(process.execPath, [CLI, 'api', '--port', '0', '--redis', 'redis://127.0.0.1:1']).catch(
      (e) => e,
    );
    expect([r.code, r.stdout, r.stderr]).toEqual([
      1,
      '',
      'trellis: ERR_BAD_REQUEST: the job service needs a store: give socket, or meta etcd://HOST:PORT\n',
    ]);
  });
});
