/**
 * Task hosts and the agent's death: an agent process (a child here, running
 * the built runners as `trellis agent` will) is killed with SIGKILL while its
 * task's handler spins without yielding; the task host must not outlive it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TrellisClient, tensor } from '../dist/src/index.js';
import { writeDataset } from '../dist/src/loaders/shard-writer.js';
import { eventually, killChildren, startChild } from './helpers/child.js';
import { DIST, startStore } from './helpers/store.js';
import { HANDLERS, processRunning } from './helpers/task-context.js';

let env: Awaited<ReturnType<typeof startStore>>;
let client: TrellisClient;
let shard: string;

beforeAll(async () => {
  env = await startStore();
  client = await connect({ socket: env.socket });
  ({
    shards: [shard],
  } = await writeDataset(client, 'kinds/faults', { features: tensor('float32', [10, 2]), labels: new Uint8Array(10) }));
});
afterEach(killChildren);
afterAll(async () => {
  await client?.close();
  await env?.stop();
});

describe('task hosts when the agent dies', () => {
  it('a spinning handler’s host is killed once its agent is gone (kill -9)', async () => {
    const agent = startChild(
      `
      const { runners } = await import(${JSON.stringify(DIST.replace(/index\.js$/, 'jobs/kinds/index.js'))});
      const client = await connect({ socket: process.env.SOCK });
      const ctx = {
        client, node: 'n', socket: process.env.SOCK, localShards: [process.env.SHARD],
        signal: new AbortController().signal, progress: () => {}, log: (line) => send({ log: line }),
        handlerDirs: [process.env.HANDLERS],
      };
      const spec = { kind: 'map', dataset: 'kinds/faults', handler: 'spin' };
      runners.map({ jobId: 'orphan', index: 0, spec, shards: [process.env.SHARD] }, ctx).catch((e) => send({ err: e.code }));
      `,
      { SOCK: env.socket, SHARD: shard, HANDLERS },
    );
    const line = String((await agent.next()).log);
    const host = Number(/^spinning in (\d+)$/.exec(line)?.[1]);
    expect(processRunning(host)).toBe(true);
    agent.proc.kill('SIGKILL');
    expect(await agent.exited).toEqual({ code: null, signal: 'SIGKILL' });
    await eventually(() => !processRunning(host), `task host ${host} stopping after its agent died`);
  });

  it('idle spare and warm hosts do not keep an agent process alive, and go when it exits', async () => {
    const agent = startChild(
      `
      const kinds = await import(${JSON.stringify(DIST.replace(/index\.js$/, 'jobs/kinds/index.js'))});
      const client = await connect({ socket: process.env.SOCK });
      const ctx = {
        client, node: 'n', socket: process.env.SOCK, localShards: [process.env.SHARD],
        signal: new AbortController().signal, progress: () => {}, log: () => {}, handlerDirs: [process.env.HANDLERS],
      };
      kinds.keepSpareHosts(process.env.SOCK, 2);
      const spec = { kind: 'map', dataset: 'kinds/faults', handler: 'sum' };
      await kinds.runners.map({ jobId: 'idle', index: 0, spec, shards: [process.env.SHARD] }, ctx);
      send({ hosts: [...kinds.spareHostPids(process.env.SOCK), ...kinds.warmHostPids(process.env.SOCK, 'idle')] });
      await client.close();
      `,
      { SOCK: env.socket, SHARD: shard, HANDLERS },
    );
    const hosts = (await agent.next()).hosts as number[];
    expect(hosts).toHaveLength(3);
    // nothing else holds it, so it exits by itself (spares never end on their own)
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    for (const pid of hosts) await eventually(() => !processRunning(pid), `task host ${pid} exiting after its agent`);
  });
});
