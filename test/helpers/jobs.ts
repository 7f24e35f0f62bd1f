/**
 * Jobs test helpers: `trellis agent` child processes (stopped or killed by
 * pid), a fresh Redis key prefix per test, a dataset with known contents and
 * its sums computed in-process, and waiting for a job to end through its
 * event stream.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { TrellisClient } from '../../dist/src/client/client.js';
import type { Job, JobEvent, JobService } from '../../dist/src/jobs/job-types.js';
import { writeShard } from '../../dist/src/loaders/shard-writer.js';
import { silentLogger } from '../../dist/src/observe/logger.js';
import { CLI, ROOT, untilReady } from './store.js';

export const HANDLERS = join(ROOT, 'test/fixtures/handlers');
/** A logger that says nothing, for in-process agents and services. */
export const quiet = silentLogger;

export const freshPrefix = (): string => `trellis-test:${randomUUID().slice(0, 8)}`;

export interface AgentChild {
  child: ChildProcess;
  output(): string;
  /** SIGTERM and wait: the agent drains; resolves with its exit code. */
  stop(): Promise<number | null>;
  /** kill -9 and wait. */
  kill(): Promise<void>;
}

const agents = new Set<AgentChild>();

export async function spawnAgent(
  socket: string,
  redis: string,
  prefix: string,
  args: string[] = [],
): Promise<AgentChild> {
  const child = spawn(
    process.execPath,
    [CLI, 'agent', '--socket', socket, '--redis', redis, '--prefix', prefix, '--handlers', HANDLERS, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output = await untilReady(child, 'agent');
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const waitExit = (sig: NodeJS.Signals) =>
    new Promise<number | null>((resolve) => {
      if (gone()) return resolve(child.exitCode);
      child.once('exit', (c) => resolve(c));
      process.kill(child.pid!, sig);
    });
  const a: AgentChild = {
    child,
    output,
    stop: async () => {
      agents.delete(a);
      return waitExit('SIGTERM');
    },
    kill: async () => {
      agents.delete(a);
      await waitExit('SIGKILL');
    },
  };
  agents.add(a);
  return a;
}

/** kill -9 every agent a test left running. */
export async function killAgents(): Promise<void> {
  await Promise.all([...agents].map((a) => a.kill()));
}

/** A dataset of `shards` shards of `rows` rows each (features [rows, 4] float32, labels uint8), with per-shard sums. */
export function sumDataset(
  client: TrellisClient,
  name: string,
  shards: number,
  rows = 8,
): Promise<{ shardIds: string[]; sums: number[][] }> {
  return spreadDataset([client], name, new Array(shards).fill(0), rows);
}

/**
 * The same kind of dataset with shard i written on the store of clients[owners[i]]
 * (and persisted there), created as one dataset by clients[0].
 */
export async function spreadDataset(
  clients: TrellisClient[],
  name: string,
  owners: number[],
  rows = 8,
): Promise<{ shardIds: string[]; sums: number[][] }> {
  const shardIds: string[] = [];
  const sums: number[][] = [];
  for (let s = 0; s < owners.length; s++) {
    const x = new Float32Array(rows * 4);
    const y = new Uint8Array(rows);
    for (let i = 0; i < x.length; i++) x[i] = ((i * 7 + s) % 13) - 6;
    for (let i = 0; i < rows; i++) y[i] = (i + s) % 10;
    const c = clients[owners[s]];
    const id = await writeShard(
      c,
      { dtype: 'float32', shape: [rows, 4], data: x },
      { dtype: 'uint8', shape: [rows], data: y },
    );
    await c.persist(id);
    shardIds.push(id);
    sums.push([x.reduce((a, b) => a + b, 0), y.reduce((a, b) => a + b, 0), rows]);
  }
  await clients[0].createDataset(name, shardIds);
  return { shardIds, sums };
}

/** Every event of the job until its final state; then the job. */
export async function untilDone(
  jobs: JobService,
  id: string,
  timeoutMs = 45_000,
): Promise<{ job: Job; events: JobEvent[] }> {
  const events: JobEvent[] = [];
  for await (const ev of jobs.events(id, undefined, AbortSignal.timeout(timeoutMs))) events.push(ev);
  return { job: await jobs.get(id), events };
}

/** The values of a map job's output dataset, in shard order. */
export async function outputValues(client: TrellisClient, output: string): Promise<number[][]> {
  const loc = await client.locate(output);
  const out: number[][] = [];
  for (const s of loc.shards) {
    const id = await client.migrate(s.id);
    const v = (await client.get(id)) as { data: Float64Array };
    out.push([...v.data]);
    await client.release(id);
  }
  return out;
}
