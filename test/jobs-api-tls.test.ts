/**
 * The jobs API over https (`trellis api --tls-cert --tls-key`, optionally
 * --tls-ca --tls-client-auth): ApiClient and `trellis jobs` trust it with
 * --tls-ca / $TRELLIS_TLS_CA and fail with a typed error without it; with
 * client auth, a client without a certificate signed by the CA is refused.
 * A real listening fastify over the in-memory service; certificates from
 * openssl at test time.
 */
import { execFile, spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runApi } from '../dist/src/cli/api-command.js';
import { ApiClient } from '../dist/src/jobs/api/api-client.js';
import { buildApi } from '../dist/src/jobs/api/build-api.js';
import { findLogLine } from '../dist/src/observe/log-lines.js';
import { loadTls } from '../dist/src/tls-config.js';
import { makeCerts, type TestCerts } from './helpers/certs.js';
import { errText, eventually } from './helpers/child.js';
import { TOKEN, TRAIN } from './helpers/jobs-api.js';
import { MemoryJobService, NODES } from './helpers/memory-job-service.js';
import { CLI } from './helpers/store.js';

const exec = promisify(execFile);

let certs: TestCerts;
beforeAll(() => {
  certs = makeCerts();
});
afterAll(() => certs?.cleanup());

async function listenHttps(files: Parameters<typeof loadTls>[0]) {
  const service = new MemoryJobService();
  const app = buildApi({ service, token: TOKEN, tls: loadTls(files, 'server') });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, service, url: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

async function jobs(args: string[], env: Record<string, string>) {
  try {
    const r = await exec(process.execPath, [CLI, 'jobs', ...args], {
      env: { ...process.env, TRELLIS_TOKEN: TOKEN, ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('the jobs API over https', () => {
  let api: Awaited<ReturnType<typeof listenHttps>>;
  beforeAll(async () => {
    api = await listenHttps({ cert: certs.serverCert, key: certs.serverKey });
  });
  afterAll(async () => api?.app.close());

  it('answers an ApiClient that trusts its CA', async () => {
    const client = new ApiClient({ url: api.url, token: TOKEN, tls: { ca: certs.ca } });
    expect(await client.submit(TRAIN)).toEqual({ id: 'train-1', state: 'queued', created: true });
    expect(await client.nodes()).toEqual(NODES);
  });

  it('fails clearly for a client without the CA (ERR_TLS_HANDSHAKE) and for a plain http URL', async () => {
    const m = await errText(new ApiClient({ url: api.url, token: TOKEN }).nodes());
    expect(m).toMatch(
      /^ERR_TLS_HANDSHAKE: the TLS handshake with the API at https:\/\/127\.0\.0\.1:\d+ failed \(UNABLE_TO_VERIFY_LEAF_SIGNATURE: /,
    );
    const foreign = await errText(new ApiClient({ url: api.url, token: TOKEN, tls: { ca: certs.foreignCa } }).nodes());
    expect(foreign).toMatch(/^ERR_TLS_HANDSHAKE: .*\(UNABLE_TO_VERIFY_LEAF_SIGNATURE: /);
    expect(
      await errText(
        Promise.resolve().then(() => new ApiClient({ url: api.url.replace('https', 'http'), tls: { ca: certs.ca } })),
      ),
    ).toMatch(/^ERR_TLS_CONFIG: TLS files were given but the API URL http:\/\/127\.0\.0\.1:\d+\/ is not https:$/);
  });

  it('`trellis jobs` trusts $TRELLIS_TLS_CA or --tls-ca; without it exits 5, with a bad CA file exits 2', async () => {
    const env = { TRELLIS_API: api.url };
    const byEnv = await jobs(['show', 'train-1', '--json'], { ...env, TRELLIS_TLS_CA: certs.ca });
    expect({ code: byEnv.code, stderr: byEnv.stderr, id: JSON.parse(byEnv.stdout || '{}').id }).toEqual({
      code: 0,
      stderr: '',
      id: 'train-1',
    });
    const byFlag = await jobs(['--tls-ca', certs.ca, 'show', 'train-1', '--json'], env);
    expect(byFlag.code).toBe(0);
    const none = await jobs(['show', 'train-1'], env);
    expect(none.code).toBe(5);
    expect(none.stderr).toMatch(
      /^trellis: ERR_TLS_HANDSHAKE: the TLS handshake with the API at https:\/\/127\.0\.0\.1:\d+ failed \(UNABLE_TO_VERIFY_LEAF_SIGNATURE: /,
    );
    const bad = await jobs(['--tls-ca', join(certs.dir, 'nope.pem'), 'show', 'train-1'], env);
    expect({ code: bad.code, stderr: bad.stderr }).toEqual({
      code: 2,
      stderr: `trellis: ERR_TLS_CONFIG: cannot read --tls-ca ${join(certs.dir, 'nope.pem')}: ENOENT\n`,
    });
  });
});

describe('the jobs API with client certificates (--tls-client-auth)', () => {
  let api: Awaited<ReturnType<typeof listenHttps>>;
  beforeAll(async () => {
    api = await listenHttps({ cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, clientAuth: true });
  });
  afterAll(async () => api?.app.close());

  it('answers a client presenting a certificate signed by its CA, refuses one without or with a foreign one (ERR_UNAUTHORIZED)', async () => {
    const good = new ApiClient({
      url: api.url,
      token: TOKEN,
      tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
    });
    expect(await good.nodes()).toEqual(NODES);
    const none = await errText(new ApiClient({ url: api.url, token: TOKEN, tls: { ca: certs.ca } }).nodes());
    const foreign = await errText(
      new ApiClient({
        url: api.url,
        token: TOKEN,
        tls: { ca: certs.ca, cert: certs.foreignCert, key: certs.foreignKey },
      }).nodes(),
    );
    const refused = 'ERR_UNAUTHORIZED: this API requires a client certificate signed by its CA; this one was refused';
    expect([none, foreign]).toEqual([
      `${refused} (none was presented)`,
      `${refused} (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`,
    ]);
  });
});

describe('trellis api (runApi) with TLS flags', () => {
  it('logs an https URL with tls mutual on its listening line, and refuses unusable files before starting the service', async () => {
    const memory = new MemoryJobService();
    const startService = vi.fn(async () => memory);
    const lines: string[] = [];
    let stop!: (sig: string) => void;
    // JSON lines land in `lines`, as `trellis api` writes them to stdout.
    const logger = pino({ name: 'trellis-api' }, { write: (l: string) => void lines.push(l) });
    const base = { port: 0, host: '127.0.0.1', redis: 'redis://127.0.0.1:6379', socket: '/tmp/s.sock', token: TOKEN };
    const running = runApi(
      { ...base, tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, clientAuth: true } },
      { stop: new Promise((r) => (stop = r)), logger, startService },
    );
    const listening = () => findLogLine(lines.join(''), 'listening');
    await eventually(() => listening() !== undefined, 'the listening line');
    const { url, auth, tls } = listening()!;
    expect({ url: String(url).replace(/:\d+$/, ':PORT'), auth, tls }).toEqual({
      url: 'https://127.0.0.1:PORT',
      auth: 'token',
      tls: 'mutual',
    });
    stop('SIGTERM');
    await running;

    const refused = vi.fn(async () => memory);
    const bad = await errText(
      runApi(
        { ...base, tls: { cert: certs.serverCert, key: certs.foreignKey } },
        { stop: new Promise(() => {}), logger, startService: refused },
      ),
    );
    expect(bad).toMatch(
      /^ERR_TLS_CONFIG: the TLS files \(--tls-cert .*server\.pem, --tls-key .*foreign\.key\) cannot be used: /,
    );
    expect(refused).not.toHaveBeenCalled();
  });

  it('`trellis api` with a missing key file exits 1 with one ERR_TLS_CONFIG line, before reaching Redis', () => {
    const key = join(certs.dir, 'missing.key');
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        'api',
        '--port',
        '0',
        '--redis',
        'redis://127.0.0.1:1',
        '--socket',
        '/nonexistent.sock',
        '--tls-cert',
        certs.serverCert,
        '--tls-key',
        key,
      ],
      { env: { ...process.env, TRELLIS_TOKEN: TOKEN }, encoding: 'utf8', timeout: 30_000 },
    );
    expect({ status: r.status, stderr: r.stderr, stdout: r.stdout }).toEqual({
      status: 1,
      stderr: `trellis: ERR_TLS_CONFIG: cannot read --tls-key ${key}: ENOENT\n`,
      stdout: '',
    });
  });
});
