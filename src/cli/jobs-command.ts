/**
 * `trellis jobs submit|ls|show|logs|cancel`: a client of the HTTP API
 * (src/jobs/api/api-client.ts), loaded inside each action so `trellis store`
 * never loads it. Failures print `trellis: CODE: message` and exit with the
 * codes of exit-codes.ts.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { TrellisError } from '../errors.js';
import type { ApiClient } from '../jobs/api/api-client.js';
import type { JobSpec } from '../jobs/job-types.js';
import { reported, usageExit } from './exit-codes.js';
import { formatJob, formatJobList } from './job-format.js';
import { readToken } from './read-token.js';
import { tlsFilesOf, tlsFlag } from './tls-flags.js';

export const DEFAULT_API = 'http://127.0.0.1:7080';

function numberArg(v: string): number {
  const n = Number(v);
  // Only "is it a number": the API checks ranges and says what it wants.
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got ${v}`);
  return n;
}

function hiddenArg(v: string): number[] {
  return v.split(',').map((s) => numberArg(s));
}

function jsonArg(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    throw new InvalidArgumentError(`expected JSON, got ${v}`);
  }
}

interface GlobalOptions {
  api?: string;
  tokenFile?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

async function client(cmd: Command): Promise<ApiClient> {
  const o = cmd.optsWithGlobals<GlobalOptions>();
  const { ApiClient } = await import('../jobs/api/api-client.js');
  return new ApiClient({
    url: o.api ?? process.env.TRELLIS_API ?? DEFAULT_API,
    token: readToken(o.tokenFile),
    tls: tlsFilesOf(o, 'TRELLIS_TLS_CA'),
  });
}

function specFromFile(file: string): JobSpec {
  const text = readFileSync(file === '-' ? 0 : file, 'utf8');
  try {
    return JSON.parse(text) as JobSpec;
  } catch (e) {
    throw new TrellisError('ERR_BAD_REQUEST', `${file === '-' ? 'stdin' : file} is not JSON: ${(e as Error).message}`);
  }
}

/** A spec from flags: only the flags given, so the API's defaults and checks apply to the rest. */
function specFromFlags(o: Record<string, unknown>): JobSpec {
  const kind = o.kind as JobSpec['kind'];
  if (o.dataset === undefined) throw new TrellisError('ERR_BAD_REQUEST', '--dataset is required with --kind');
  let model: unknown = o.model;
  if (kind === 'train') {
    model = o.hidden !== undefined ? { kind: o.model ?? 'mlp', hidden: o.hidden } : { kind: o.model ?? 'softmax' };
  }
  const fields: Record<string, unknown> = {
    id: o.id,
    kind,
    dataset: o.dataset,
    evalDataset: o.evalDataset,
    model,
    epochs: o.epochs,
    batchSize: o.batchSize,
    learningRate: o.learningRate,
    ranks: o.ranks,
    baseBatch: o.baseBatch,
    warmupSteps: o.warmupSteps,
    checkpointEvery: o.checkpointEvery,
    maxRestarts: o.maxRestarts,
    handler: o.handler,
    args: o.args,
    output: o.output,
    priority: o.priority,
    timeoutMs: o.timeoutMs,
    maxRetries: o.maxRetries,
  };
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as unknown as JobSpec;
}

export function jobsCommand(): Command {
  const jobs = new Command('jobs')
    .description('submit and follow jobs through the HTTP API (`trellis api`)')
    .option('--api <url>', `the API's URL (default: $TRELLIS_API or ${DEFAULT_API})`)
    .option('--token-file <path>', "file holding the API's token (default: $TRELLIS_TOKEN)")
    .addOption(tlsFlag.ca("that an https API's certificate must chain to (default: $TRELLIS_TLS_CA)"))
    .addOption(tlsFlag.cert('to present to an API that requires client certificates'))
    .addOption(tlsFlag.key())
    // Usage errors exit 2, apart from API failures (exit-codes.ts); --help exits 0.
    .exitOverride(usageExit);

  jobs
    .command('submit')
    .description('submit a job from a JSON spec FILE (- for stdin) or from flags')
    .argument('[file]', 'a JobSpec as JSON')
    .addOption(new Option('--kind <kind>', 'job kind').choices(['train', 'map', 'infer']))
    .option('--dataset <name>', 'input dataset')
    .option('--id <id>', 'client-chosen job id (submitting it again answers the same job)')
    .option('--eval-dataset <name>', 'train: dataset to measure test accuracy on')
    .option('--model <model>', 'train: softmax or mlp; infer: the name of a stored model')
    .option('--hidden <sizes>', 'train, mlp: hidden layer sizes, e.g. 256,128', hiddenArg)
    .option('--epochs <n>', 'train: epochs', numberArg)
    .option('--batch-size <n>', 'train: batch size', numberArg)
    .option('--learning-rate <x>', 'train: learning rate', numberArg)
    .option('--ranks <n>', 'train: data-parallel ranks (default: one per node holding shards)', numberArg)
    .option('--base-batch <n>', 'train: the batch --learning-rate is tuned for (default: --batch-size)', numberArg)
    .option('--warmup-steps <n>', 'train: warm-up steps of a scaled learning rate', numberArg)
    .option('--checkpoint-every <n>', 'train: steps between checkpoints (default 50)', numberArg)
    .option('--max-restarts <n>', 'train: group restarts after a lost rank (default 3)', numberArg)
    .option('--handler <name>', "map: handler module name in the agents' --handlers")
    .option('--args <json>', 'map: arguments for the handler, as JSON', jsonArg)
    .option('--output <name>', 'map, infer: output dataset name')
    .option('--priority <n>', 'higher runs first', numberArg)
    .option('--timeout-ms <ms>', 'fail the job after running this long', numberArg)
    .option('--max-retries <n>', 'attempts per task after the first', numberArg)
    .option('--json', 'print { id, state, created } as JSON')
    .action(
      reported(async (file: string | undefined, o: Record<string, unknown>, cmd: Command) => {
        if ((file === undefined) === (o.kind === undefined)) {
          throw new TrellisError('ERR_BAD_REQUEST', 'give a spec FILE or --kind (with --dataset), not both');
        }
        const spec = file !== undefined ? specFromFile(file) : specFromFlags(o);
        const r = await (await client(cmd)).submit(spec);
        process.stdout.write(
          o.json ? `${JSON.stringify(r)}\n` : `${r.created ? 'submitted' : 'exists'} ${r.id} ${r.state}\n`,
        );
      }),
    );

  jobs
    .command('ls')
    .description('list jobs')
    .addOption(
      new Option('--state <state>', 'only jobs in this state').choices([
        'queued',
        'running',
        'succeeded',
        'failed',
        'cancelled',
      ]),
    )
    .addOption(new Option('--kind <kind>', 'only jobs of this kind').choices(['train', 'map', 'infer']))
    .option('--limit <n>', 'at most this many', numberArg)
    .option('--json', 'print the jobs as a JSON array')
    .action(
      reported(async (o: { state?: string; kind?: string; limit?: number; json?: boolean }, cmd: Command) => {
        const list = await (await client(cmd)).list({
          state: o.state as never,
          kind: o.kind as never,
          limit: o.limit,
        });
        process.stdout.write(o.json ? `${JSON.stringify(list, null, 2)}\n` : formatJobList(list));
      }),
    );

  jobs
    .command('show')
    .description('show one job')
    .argument('<id>')
    .option('--json', 'print the job record as JSON')
    .action(
      reported(async (id: string, o: { json?: boolean }, cmd: Command) => {
        const job = await (await client(cmd)).get(id);
        process.stdout.write(o.json ? `${JSON.stringify(job, null, 2)}\n` : formatJob(job));
      }),
    );

  jobs
    .command('logs')
    .description("print a job's log (with -f, follow it until the job ends)")
    .argument('<id>')
    .option('-f, --follow', 'follow the event stream, printing log lines as they come')
    .action(
      reported(async (id: string, o: { follow?: boolean }, cmd: Command) => {
        const api = await client(cmd);
        if (!o.follow) {
          process.stdout.write(await api.logs(id));
          return;
        }
        const ac = new AbortController();
        process.once('SIGINT', () => ac.abort());
        for await (const ev of api.events(id, { signal: ac.signal })) {
          if (ev.type === 'log') process.stdout.write(`${ev.data.line}\n`);
          else if (ev.type === 'state')
            process.stderr.write(`trellis: job ${id} ${ev.data.state}${ev.data.reason ? `: ${ev.data.reason}` : ''}\n`);
        }
      }),
    );

  jobs
    .command('cancel')
    .description('cancel a job (its running tasks are asked to stop)')
    .argument('<id>')
    .action(
      reported(async (id: string, _o: unknown, cmd: Command) => {
        const r = await (await client(cmd)).cancel(id);
        process.stdout.write(`cancel requested ${r.id} ${r.state}\n`);
      }),
    );

  return jobs;
}
