/**
 * SIGTERM for the three long-running commands, as real processes: once running, `trellis store`,
 * `trellis agent` and `trellis api` each shut down and exit 0; while still starting (here, stuck
 * on a Redis that accepts connections and never answers) they exit at once with 143 (128 +
 * SIGTERM) instead of relying on the signal's default action, which Node as PID 1 in a container
 * does not have (deploy/Dockerfile runs node as PID 1).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { startRedisServer } from 'trellis/jobs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshPrefix } from './helpers/jobs.js';
import { CLI, ROOT, spawnStore } from './helpers/store.js';

type Exit = { code: number | null; signal: NodeJS.Signals | null };

function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Everything the child prints, once a line of its stdout contains `word`. */
function untilPrinted(child: ChildProcess, word: string): Promise<() => string> {
  let out = '';
  child.stderr!.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes(word)) resolve(() => out);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before printing ${word}: ${out}`)));
  });
}

function trellis(args: string[]): ChildProcess {
  return spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('SIGTERM', () => {
  let redis: Awaited<ReturnType<typeof startRedisServer>>;
  let store: Awaited<ReturnType<typeof spawnStore>>;
  // A "Redis" that takes connections and never answers: a command stuck starting.
  let silent: Server;
  const held: Socket[] = [];
  let silentUrl = '';
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
    store = await spawnStore(['--size', '64M']);
    silent = createServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const addr = silent.address();
    silentUrl = `redis://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const s of held) s.destroy();
    await new Promise((r) => silent.close(r));
    await store.stop();
    await redis.stop();
  });

  const running: [string, () => string[], string][] = [
    ['store', () => ['store', '--socket', `${store.dir}/second.sock`, '--size', '64M'], 'ready'],
    ['agent', () => ['agent', '--socket', store.socket, '--redis', redis.url, '--prefix', freshPrefix()], 'ready'],
    [
      'api',
      () => ['api', '--port', '0', '--redis', redis.url, '--socket', store.socket, '--prefix', freshPrefix()],
      'listening',
    ],
  ];

  it.each(running)('a running `trellis %s` shuts down and exits 0', async (_name, args, readyWord) => {
    const child = trellis(args());
    children.push(child);
    const output = await untilPrinted(child, readyWord);
    child.kill('SIGTERM');
    expect(await exitOf(child), output()).toEqual({ code: 0, signal: null });
  });

  it.each([
    ['agent', () => ['agent', '--socket', store.socket, '--redis', silentUrl, '--prefix', freshPrefix()]],
    ['api', () => ['api', '--port', '0', '--redis', silentUrl, '--socket', store.socket, '--prefix', freshPrefix()]],
  ])('a `trellis %s` still starting exits at once with 143, by its own handler', async (_name, args) => {
    const before = held.length;
    const child = trellis(args());
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    // It is starting once it has connected to the silent Redis.
    await new Promise<void>((resolve) => silent.once('connection', () => resolve()));
    expect(held.length).toBeGreaterThan(before);
    child.kill('SIGTERM');
    expect(await exitOf(child), out).toEqual({ code: 143, signal: null });
    expect(out).not.toContain('ready');
    expect(out).not.toContain('listening');
  });

  it('a second signal during a slow shutdown exits at once with 143', async () => {
    // A command whose shutdown never ends, on the same module the CLI uses.
    const code = `
      const { untilStopSignal } = await import(${JSON.stringify(`${ROOT}dist/src/cli/stop-signals.js`)});
      // Work under way, as a server's sockets would be (signal handlers alone keep no process up).
      setInterval(() => {}, 1000);
      const stopped = untilStopSignal();
      console.log('running');
      await stopped;
      console.log('stopping');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    await untilPrinted(child, 'running');
    const stopping = untilPrinted(child, 'stopping');
    child.kill('SIGTERM');
    await stopping;
    child.kill('SIGTERM');
    expect(await exitOf(child)).toEqual({ code: 143, signal: null });
  });
});
