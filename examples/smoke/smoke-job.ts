/**
 * A deployment's end-to-end check: writes a tiny dataset into this node's
 * store and, given an API, trains on it through the jobs API and waits for the
 * job to finish. The chart's `helm test` pod and scripts/container-smoke.sh
 * run it inside the image:
 *
 *   node dist/examples/smoke/smoke-job.js --socket /run/trellis/store.sock \
 *       [--api http://trellis-api:7080] [--token-file /etc/trellis/token/token]
 *
 * Prints one JSON line per step; exits 0 when the job succeeded (or, without
 * --api, once the dataset is there), 1 otherwise.
 */
import { parseArgs } from 'node:util';
import { readToken } from '../../src/cli/read-token.js';
import { connect } from '../../src/client/connect.js';
import { ApiClient } from '../../src/jobs/api/api-client.js';
import { FINAL_STATES, type Job } from '../../src/jobs/job-types.js';
import { writeDataset } from '../../src/loaders/shard-writer.js';

const ROWS = 512;
const SIDE = 8;
const CLASSES = 4;

/** Rows whose label is the quadrant holding their one bright pixel: learnable in one epoch. */
function tinyDataset(): { images: Uint8Array; labels: Uint8Array } {
  const images = new Uint8Array(ROWS * SIDE * SIDE);
  const labels = new Uint8Array(ROWS);
  for (let r = 0; r < ROWS; r++) {
    const label = r % CLASSES;
    const y = (label >> 1) * (SIDE / 2) + ((r >> 2) % (SIDE / 2));
    const x = (label & 1) * (SIDE / 2) + ((r >> 4) % (SIDE / 2));
    images[r * SIDE * SIDE + y * SIDE + x] = 255;
    labels[r] = label;
  }
  return { images, labels };
}

function say(step: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

/** Writes the dataset unless this store run already has it; resolves with its name. */
async function ensureDataset(socket: string, given: string | undefined): Promise<string> {
  await using client = await connect({ socket, name: 'smoke-job' });
  const name = given ?? `smoke/${(await client.status()).instanceId}`;
  if ((await client.getName(name).catch(() => undefined)) !== undefined) {
    say('dataset-exists', { name });
    return name;
  }
  const { images, labels } = tinyDataset();
  const written = await writeDataset(client, name, {
    features: { dtype: 'uint8', shape: [ROWS, SIDE, SIDE], data: images },
    labels,
    shards: 2,
  });
  say('dataset-written', { name, id: written.id, shards: written.shards.length, rows: written.rows });
  return name;
}

async function trainOnce(api: ApiClient, dataset: string, timeoutMs: number): Promise<Job> {
  const id = `smoke-${Date.now().toString(36)}`;
  await api.submit({ id, kind: 'train', dataset, model: { kind: 'softmax' }, epochs: 1, batchSize: 64 });
  say('submitted', { id });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await api.get(id);
    if ((FINAL_STATES as readonly string[]).includes(job.state)) return job;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${job.state} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string', default: '/run/trellis/store.sock' },
      api: { type: 'string' },
      'token-file': { type: 'string' },
      // Default: smoke/<instance id> of this node's store, new with each store run (a name left
      // by an earlier run would point at objects lost with it).
      dataset: { type: 'string' },
      'timeout-ms': { type: 'string', default: '120000' },
    },
  });
  const dataset = await ensureDataset(values.socket, values.dataset);
  if (values.api === undefined) return 0;
  const api = new ApiClient({ url: values.api, token: readToken(values['token-file']) });
  const job = await trainOnce(api, dataset, Number(values['timeout-ms']));
  say('done', { id: job.id, state: job.state, result: job.result, error: job.error });
  return job.state === 'succeeded' ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    say('failed', { code: (e as { code?: string }).code, message: (e as Error).message });
    process.exit(1);
  },
);
