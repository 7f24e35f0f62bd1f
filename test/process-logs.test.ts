/**
 * The logs of the long-running commands as an operator sees them: pino JSON
 * lines on stdout (nothing ad hoc on stderr), --log-level and
 * $TRELLIS_LOG_LEVEL, a ready/listening line that is written whatever the
 * level, coloured pretty lines when stdout is a terminal (through script(1),
 * a real pty), and `trellis api`'s /metrics with Node's process metrics.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, findLogLine } from 'trellis';
import { freePort } from 'trellis/jobs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { families, promtool, sample, scrape } from './helpers/metrics.js';
import { CLI, startStore, tempDir, untilReady } from './helpers/store.js';

const run = promisify(execFile);

/** Resolves with the exit code once the child is gone and its output has all been read ('close', not 'exit'). */
function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) {
    if (child.stdout?.readableEnded !== false) return Promise.resolve(child.exitCode);
  }
  return new Promise((resolve) => child.once('close', (code) => resolve(code)));
}

/** This process's environment without a log level of its own. */
function withoutLevel(): NodeJS.ProcessEnv {
  const { TRELLIS_LOG_LEVEL: _, ...env } = process.env;
  return env;
}

/** Every stdout line of a child, parsed: each one must be JSON. */
function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('process logs', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });

  /** `trellis store` with these args and env; resolves once ready, with its stdout and stderr so far and a stop. */
  async function store(args: string[], env: Record<string, string> = {}) {
    const { dir, cleanup } = tempDir();
    cleanups.push(async () => cleanup());
    const socket = join(dir, 's.sock');
    const child = spawn(process.execPath, [CLI, 'store', '--socket', socket, '--size', '16M', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...withoutLevel(), ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
    });
    await untilReady(child, 'store');
    return {
      socket,
      stop: async () => {
        child.kill('SIGTERM');
        const code = await exited(child);
        return { code, stdout, stderr };
      },
    };
  }

  it('the store logs JSON lines on stdout and nothing on stderr: ready, then shutting down and closed', async () => {
    const s = await store([]);
    const { code, stdout, stderr } = await s.stop();
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const lines = jsonLines(stdout);
    expect(lines.map(({ level, name, msg }) => ({ level, name, msg }))).toEqual([
      { level: 30, name: 'trellis-store', msg: 'ready' },
      { level: 30, name: 'trellis-store', msg: 'shutting down' },
      { level: 30, name: 'trellis-store', msg: 'store closed' },
    ]);
    expect(lines[1]).toMatchObject({ signal: 'SIGTERM' });
  });

  it('--log-level warn keeps only the ready line of an uneventful run; $TRELLIS_LOG_LEVEL does the same, the flag wins', async () => {
    const byFlag = await (await store(['--log-level', 'warn'])).stop();
    expect(jsonLines(byFlag.stdout).map((l) => l.msg)).toEqual(['ready']);
    const byEnv = await (await store([], { TRELLIS_LOG_LEVEL: 'warn' })).stop();
    expect(jsonLines(byEnv.stdout).map((l) => l.msg)).toEqual(['ready']);
    const both = await (await store(['--log-level', 'info'], { TRELLIS_LOG_LEVEL: 'silent' })).stop();
    expect(jsonLines(both.stdout).map((l) => l.msg)).toEqual(['ready', 'shutting down', 'store closed']);
  });

  it('logs a client that breaks the protocol at warn with its code, and clients coming and going at debug', async () => {
    const s = await store(['--log-level', 'debug']);
    const c = await connect({ socket: s.socket, name: 'log-test' });
    await c.close();
    const raw = netConnect(s.socket);
    raw.on('error', () => {});
    raw.resume(); // read the error answer and the end that follows it
    raw.write(Buffer.from([0xff, 0xff, 0xff, 0xff])); // a frame length no store accepts
    await new Promise((resolve) => raw.once('close', resolve));
    const { stdout } = await s.stop();
    const lines = jsonLines(stdout).filter((l) => l.conn !== undefined);
    expect(lines.map(({ level, transport, client, code, msg }) => ({ level, transport, client, code, msg }))).toEqual([
      { level: 20, transport: 'ipc', client: 'log-test', code: undefined, msg: 'client connected' },
      { level: 20, transport: 'ipc', client: undefined, code: undefined, msg: 'client gone' },
      {
        level: 40,
        transport: 'ipc',
        client: undefined,
        code: 'ERR_PROTOCOL',
        msg: expect.stringMatching(/^connection dropped: /),
      },
    ]);
    expect(lines[2]).not.toHaveProperty('err');
  });

  it('an unknown level is refused before anything starts', async () => {
    const r = await run(process.execPath, [
      CLI,
      'store',
      '--socket',
      '/tmp/none.sock',
      '--size',
      '16M',
      '--log-level',
      'loud',
    ]).catch((e) => e);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      "error: option '--log-level <level>' argument 'loud' is invalid. log level must be one of fatal, error, warn, info, debug, trace, silent, got \"loud\"\n",
    );
  });

  it('pretty-prints when stdout is a terminal', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(async () => cleanup());
    const socket = join(dir, 's.sock');
    // script(1) runs the store on a pty; the store is stopped once its ready line is out.
    const child = spawn(
      'script',
      ['-qec', `${process.execPath} ${CLI} store --socket ${socket} --size 16M`, '/dev/null'],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ready line: ${out}`)), 20_000);
      child.stdout!.on('data', () => {
        if (/ready/.test(out)) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    child.kill('SIGTERM');
    await exited(child);
    // "[12:00:00.000] INFO (trellis-store/123): ready", coloured, then the fields one per line.
    // Escapes shown as <ESC>, so the pattern needs no control characters.
    const shown = out.replaceAll('\u001b', '<ESC>');
    expect(shown).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] <ESC>\[32mINFO<ESC>\[39m \(trellis-store\/\d+\): <ESC>\[36mready/,
    );
    expect(shown).toContain(`socket<ESC>[39m: "${socket}"`);
    expect(out).not.toContain('{"level"');
  });

  describe('trellis api', () => {
    let redis: RedisServerHandle;
    let node: Awaited<ReturnType<typeof startStore>>;
    beforeAll(async () => {
      redis = await startRedisServer();
      node = await startStore({ name: 'node-a' });
    });
    afterAll(async () => {
      await node.stop();
      await redis.stop();
    });

    it('logs JSON with request ids, a listening line with its URL, and serves /metrics with Node’s metrics', async () => {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [CLI, 'api', '--port', String(port), '--redis', redis.url, '--socket', node.socket],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: withoutLevel(),
        },
      );
      cleanups.push(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited(child);
      });
      const output = await untilReady(child, 'api', 'listening');
      const url = `http://127.0.0.1:${port}`;
      expect(findLogLine(output(), 'listening')).toMatchObject({ level: 30, name: 'trellis-api', url, auth: 'none' });
      const res = await fetch(`${url}/v1/jobs/job-x`, { headers: { 'x-request-id': 'req-9' } });
      expect(res.status).toBe(404);
      const text = await scrape(url);
      expect(
        sample(text, 'trellis_api_request_duration_seconds_count', {
          method: 'GET',
          route: '/v1/jobs/:id',
          status: '404',
        }),
      ).toBe(1);
      expect(sample(text, 'nodejs_heap_size_total_bytes')).toBeGreaterThan(0);
      expect(await promtool(families(text))).toEqual({ code: 0, output: '' });
      child.kill('SIGTERM');
      expect(await exited(child)).toBe(0);
      const lines = jsonLines(
        output()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .join('\n'),
      );
      expect(lines.filter((l) => l.reqId === 'req-9').map(({ level, msg }) => ({ level, msg }))).toEqual([
        { level: 30, msg: 'incoming request' },
        { level: 40, msg: 'no job "job-x"' },
        { level: 30, msg: 'request completed' },
      ]);
    });
  });
});
