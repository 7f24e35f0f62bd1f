/**
 * Jobs test helpers: `trellis agent` child processes (stopped or killed by
 * pid), a fresh Redis key prefix per test, a dataset with known contents and
 * its sums computed in-process, and waiting for a job to end through its
 * event stream.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { TrellisClient } from '../../src/client/client.js';
import type { Job, JobEvent, JobService } from '../../src/jobs/job-types.js';
import { writeDataset } from '../../src/loaders/shard-writer.js';
import { CLI, ROOT } from './store.js';

export const HANDLERS = join(ROOT, 'test/fixtures/handlers');
export const quiet = { info: () => {}, warn: () => {}, error: () => {} };

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
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`agent did not start: ${out}`)), 20_000);
    child.stdout!.on('data', () => {
      if (out.includes('ready')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`agent exited with ${code}: ${out}`));
    });
  });
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const waitExit = (sig: NodeJS.Signals) =>
    new Promise<number | null>((resolve) => {
      if (gone()) return resolve(child.exitCode);
      child.once('exit', (c) => resolve(c));
      process.kill(child.pid!, sig);
    });
  const a: AgentChild = {
    child,
    output: () => out,
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
export async function sumDataset(
  client: TrellisClient,
  name: string,
  shards: number,
  rows = 8,
  seed = 1,
): Promise<{ shardIds: string[]; sums: number[][] }> {
  const n = shards * rows;
  const x = new Float32Array(n * 4);
  const y = new Uint8Array(n);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 7 + seed) % 13) - 6;
  for (let i = 0; i < n; i++) y[i] = (i + seed) % 10;
  const w = await writeDataset(client, name, {
    features: { dtype: 'float32', shape: [n, 4], data: x },
    labels: y,
    shardRows: rows,
  });
  await client.persist(w.shards);
  const sums: number[][] = [];
  for (let s = 0; s < shards; s++) {
    let sx = 0;
    let sy = 0;
    for (let i = s * rows * 4; i < (s + 1) * rows * 4; i++) sx += x[i];
    for (let i = s * rows; i < (s + 1) * rows; i++) sy += y[i];
    sums.push([sx, sy, rows]);
  }
  return { shardIds: w.shards, sums };
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
