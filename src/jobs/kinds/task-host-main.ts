/**
 * The task host's entry point (a child process forked by host-pool.ts;
 * `node task-host-main.js SOCKET AGENT_PID`): connects to the node's store itself as
 * it boots — before its first task arrives when it is a spare — then runs
 * tasks one at a time, each the kind's body with a context of its own, and
 * answers each once. After a failed task it exits; after a good one it waits
 * for the next task of the same job or for `exit` (host-pool.ts decides).
 * Anything thrown becomes `{code, message}`: a TrellisError keeps its code,
 * anything else is ERR_WORKER_FAILED (map handlers' own throws are turned
 * into ERR_HANDLER_FAILED by map-task.ts before they get here).
 */
import { Worker } from 'node:worker_threads';
import type { TrellisClient } from '../../client/client.js';
import { connect } from '../../client/connect.js';
import { asTrellisError, TrellisError } from '../../errors.js';
import type { JobKind } from '../job-types.js';
import type { HostedKind } from './host-context.js';
import type { FromHost, ToHost } from './host-messages.js';

const socket = process.argv[2];
/** Our parent, as the agent itself said: process.ppid may already be init's if the agent died while we booted. */
const agentPid = Number(process.argv[3]);
/** The running task's signal; null while idle. */
let current: AbortController | null = null;
// Connect and load the map body while no task is here yet: a spare host is ready when one comes.
let booted: Promise<TrellisClient> = connect({ socket, name: `task host ${process.pid}` });
booted.catch(() => {});
import('./map-task.js').catch(() => {});

function send(m: FromHost): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) resolve();
    else process.send!(m, () => resolve());
  });
}

/** Each kind's body, loaded on first use: a map task never loads onnxruntime. */
async function body(kind: JobKind): Promise<HostedKind> {
  switch (kind) {
    case 'map':
      return (await import('./map-task.js')).mapTask;
    case 'infer':
      return (await import('./infer-task.js')).inferTask;
    case 'train':
      return (await import('./train-task.js')).trainTask;
    default:
      throw new TrellisError('ERR_BAD_REQUEST', `unknown job kind ${JSON.stringify(kind)}`);
  }
}

/** The client, checked with a ping: a host that waited a while may have lost its store (then it connects again). */
async function storeClient(): Promise<TrellisClient> {
  try {
    const c = await booted;
    await c.status();
    return c;
  } catch {
    booted = connect({ socket, name: `task host ${process.pid}` });
    return booted;
  }
}

async function run(m: Extract<ToHost, { t: 'start' }>, controller: AbortController): Promise<void> {
  let answer: FromHost;
  try {
    if (m.socket !== socket) throw new TrellisError('ERR_INTERNAL', `a host for ${socket} got a task for ${m.socket}`);
    const client = await storeClient();
    const kindBody = await body(m.kind);
    const output = await kindBody(m.payload, {
      client,
      node: m.node,
      socket: m.socket,
      localShards: m.localShards,
      handlerDirs: m.handlerDirs,
      signal: controller.signal,
      progress: (progress) => void send({ t: 'progress', progress }),
      log: (line) => void send({ t: 'log', line: String(line) }),
    });
    answer = { t: 'done', output };
  } catch (e) {
    answer = { t: 'err', error: asTrellisError(e, 'ERR_WORKER_FAILED', 'task host').toPayload() };
  }
  current = null;
  if (answer.t === 'err') {
    // A failed task may have left anything behind: this host runs nothing more.
    await exit(answer);
    return;
  }
  await send(answer);
}

async function exit(last?: FromHost): Promise<never> {
  const c = await booted.catch(() => undefined);
  await c?.close().catch(() => {});
  if (last) await send(last);
  // Whatever a handler left running (timers, sockets) must not keep the host alive.
  process.exit(0);
}

process.on('message', (m: ToHost) => {
  if (m.t === 'start' && current === null) {
    current = new AbortController();
    void run(m, current);
  } else if (m.t === 'abort') {
    current?.abort(new TrellisError('ERR_CANCELLED', 'the task was cancelled'));
  } else if (m.t === 'exit' && current === null) {
    void exit();
  }
});
// The agent went away: nobody is left to take the answer. (It may have gone while we booted.)
process.on('disconnect', () => process.exit(1));
if (!process.connected) process.exit(1);

/**
 * A handler that never yields keeps 'disconnect' from ever running, and a
 * kill -9 of the agent would leave it spinning for good. A thread of its own
 * notices the parent is gone (we are re-parented) and kills this process.
 */
const WATCHDOG = `
const { workerData } = require('node:worker_threads');
setInterval(() => { if (process.ppid !== workerData.ppid) process.kill(workerData.pid, 'SIGKILL'); }, 250);
`;
new Worker(WATCHDOG, { eval: true, workerData: { ppid: agentPid, pid: process.pid } }).unref();
