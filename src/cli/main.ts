/**
 * The `trellis` command.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { connect } from '../client/connect.js';
import { TrellisError } from '../errors.js';
import { PACKAGE_ROOT } from '../package-root.js';
import { type RpcStarter, StoreServer } from '../store/store-server.js';
import { ingestCommand } from './ingest-command.js';
import { jobsCommand } from './jobs-command.js';
import { objectCommands } from './object-commands.js';
import {
  announce,
  commandLogger,
  logLevelOption,
  metricsHostOption,
  metricsPortOption,
  startMetrics,
} from './process-observe.js';
import { readToken } from './read-token.js';
import { parseSize } from './size.js';
import { installStopSignals, untilStopSignal } from './stop-signals.js';
import { tlsFilesOf, tlsFlag } from './tls-flags.js';

function sizeArg(v: string): number {
  try {
    return parseSize(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function intArg(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got ${v}`);
  return n;
}

function modeArg(v: string): number {
  if (!/^[0-7]{3,4}$/.test(v)) throw new InvalidArgumentError(`expected an octal mode such as 0600, got ${v}`);
  return Number.parseInt(v, 8);
}

function gidArg(v: string): number {
  if (/^\d+$/.test(v)) return Number(v);
  const line = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === v);
  if (!line) throw new InvalidArgumentError(`no group named ${v}`);
  return Number(line.split(':')[2]);
}

/** The RPC server, loaded only when a store serves RPC (it is always built). */
async function rpcStarter(): Promise<RpcStarter> {
  return (await import('../store/rpc-server.js')).startRpc;
}

export async function main(argv: string[]): Promise<void> {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
  const program = new Command('trellis')
    .description('Zero-copy data plane for ML jobs: shared-memory object stores and the jobs that use them')
    .version(pkg.version);

  // The long-running commands handle SIGTERM from their first line (they may run as PID 1).
  program.hook('preAction', (_program, action) => {
    if (['store', 'agent', 'api'].includes(action.name())) installStopSignals();
  });

  program
    .command('store')
    .description('run a store daemon in the foreground')
    .requiredOption('--socket <path>', 'UNIX socket to listen on')
    .requiredOption('--size <size>', 'memory limit, bytes or 512M / 16G', sizeArg)
    .option('--name <node>', 'node name shown in status')
    .option('--segment-size <size>', 'size of each shared-memory segment (max 4G)', sizeArg)
    .option('--reserve', 'allocate and fault in the whole arena at start (keeps freed memory warm)')
    .option('--huge-pages', 'with --reserve: 2 MiB huge pages for the arena where vm.nr_hugepages has them')
    .option('--spill-dir <dir>', 'spill unreferenced objects here when memory runs out')
    .option('--punch-delay <ms>', 'how long freed memory stays warm before it goes back to the OS', intArg, 1000)
    .addOption(
      new Option('--socket-mode <mode>', 'file mode of the socket: 0600 (owner) or 0660 (with --socket-group)')
        .argParser(modeArg)
        .default(0o600, '0600'),
    )
    .option('--socket-group <group>', 'group owning the socket (name or gid)', gidArg)
    .addOption(new Option('--max-frame <size>', 'largest request frame accepted').argParser(sizeArg))
    .addOption(
      new Option('--max-buffered <size>', 'most bytes of unfinished request frames all connections may hold').argParser(
        sizeArg,
      ),
    )
    .addOption(
      new Option('--max-record-bytes <size>', 'most bytes of object metadata and member lists kept').argParser(sizeArg),
    )
    .addOption(
      new Option(
        '--frame-timeout <ms>',
        'close a connection whose frame is not complete this long after it began',
      ).argParser(intArg),
    )
    .option('--rpc-port <n>', 'serve remote clients and other stores on this TCP port (0: any free port)', intArg)
    .option('--rpc-host <host>', 'address to bind the RPC port to', '127.0.0.1')
    .option('--token-file <path>', 'file holding the shared RPC token (default: $TRELLIS_TOKEN)')
    .option('--meta <backend>', 'metadata backend: local or etcd://HOST:PORT', 'local')
    .option('--meta-prefix <prefix>', 'key prefix in etcd, so deployments can share one etcd', '/trellis/default')
    .option('--lease-ttl <seconds>', 'etcd lease TTL of this store', intArg, 10)
    .addOption(logLevelOption())
    .addOption(metricsPortOption())
    .addOption(metricsHostOption())
    .addOption(tlsFlag.cert('to serve the RPC port over TLS with (also presented to peer stores)'))
    .addOption(tlsFlag.key())
    .addOption(tlsFlag.ca('that clients and peer stores must chain to'))
    .addOption(tlsFlag.clientAuth())
    .option(
      '--repair-rate <size>',
      'repair copies at most this many bytes per second, cluster-wide (e.g. 128M)',
      sizeArg,
    )
    .option('--repair-interval <ms>', 'how often the replica sets are scanned for repair', intArg, 1000)
    .action(async (o) => {
      const token = readToken(o.tokenFile);
      const logger = await commandLogger('trellis-store', o.logLevel);
      const tls = tlsFilesOf(o);
      const store = await StoreServer.start(
        {
          socket: o.socket,
          size: o.size,
          name: o.name,
          segmentSize: o.segmentSize,
          reserve: Boolean(o.reserve),
          hugePages: Boolean(o.hugePages),
          spillDir: o.spillDir,
          punchDelayMs: o.punchDelay,
          socketMode: o.socketMode,
          socketGid: o.socketGroup,
          maxFrame: o.maxFrame,
          maxBuffered: o.maxBuffered,
          frameTimeoutMs: o.frameTimeout,
          maxRecordBytes: o.maxRecordBytes,
          meta: o.meta,
          metaPrefix: o.metaPrefix,
          leaseTtl: o.leaseTtl,
          repairRate: o.repairRate,
          repairIntervalMs: o.repairInterval,
          rpcPort: o.rpcPort,
          rpcHost: o.rpcHost,
          token,
          logger,
          tls,
        },
        o.rpcPort === undefined ? undefined : await rpcStarter(),
      );
      let closing = false;
      let metrics: Awaited<ReturnType<typeof startMetrics>>;
      try {
        metrics = await startMetrics(
          o,
          async () => (await import('../store/store-metrics.js')).storeMetrics(store),
          () => (closing ? { ok: false, reason: 'shutting down' } : { ok: true }),
        );
      } catch (e) {
        await store.close();
        throw e;
      }
      const st = store.status();
      const rpc = store.rpcAddress ? `${store.rpcAddress.host}:${store.rpcAddress.port}` : undefined;
      // Listening for the stop before saying ready: a script may send SIGTERM the moment it reads it.
      const stopped = untilStopSignal();
      // The one line scripts wait for (docs/OPERATIONS.md, "Logs"): msg 'ready' and where to reach the store.
      announce(
        logger,
        {
          socket: o.socket,
          size: st.memoryLimit,
          instance: st.instanceId,
          rpc,
          ...(tls && rpc ? { tls: tls.clientAuth ? 'mutual' : 'on' } : {}),
          metrics: metrics?.url,
        },
        'ready',
      );
      const signal = await stopped;
      logger.info({ signal }, 'shutting down');
      closing = true;
      await store.close().catch(() => {});
      await metrics?.close().catch(() => {});
      // Released: exit even if a library left a handle open (seen once in a container: the store
      // said "store closed" and stayed up until killed).
      process.exit(0);
    });

  program
    .command('status')
    .description("print a store's status as JSON (with --instances, the cluster's live stores)")
    .option('--socket <path>', "the store's UNIX socket")
    .option('--rpc <host:port>', "or the store's RPC endpoint (token from --token-file or $TRELLIS_TOKEN)")
    .option('--token-file <path>', 'file holding the shared RPC token')
    .option('--instances', 'print the live stores of the cluster instead')
    .addOption(tlsFlag.ca("that the store's RPC certificate must chain to (speaks TLS)"))
    .addOption(tlsFlag.cert('to present to a store that requires client certificates'))
    .addOption(tlsFlag.key())
    .action(async (o) => {
      if ((o.socket === undefined) === (o.rpc === undefined)) {
        throw new TrellisError('ERR_BAD_REQUEST', 'give exactly one of --socket and --rpc');
      }
      const client = o.rpc
        ? await connect({ rpc: o.rpc, token: readToken(o.tokenFile), name: 'trellis status', tls: tlsFilesOf(o) })
        : await connect({ socket: o.socket, name: 'trellis status' });
      try {
        const out = o.instances ? await client.instances() : await client.status();
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      } finally {
        await client.close();
      }
    });

  program
    .command('agent')
    .description("run a node agent next to its store: takes the tasks placed on this node's queue")
    .requiredOption('--socket <path>', "this node's store socket")
    .requiredOption('--redis <url>', 'the jobs Redis, redis://HOST:PORT')
    .option('--meta <backend>', 'metadata backend of the stores (the store itself reaches it; accepted for symmetry)')
    .option('--node <name>', "node name (default: the store's name)")
    .option('--handlers <dir...>', 'directories holding map handler modules')
    .option('--concurrency <n>', 'tasks run at once', intArg, 2)
    .option('--prefix <prefix>', 'key prefix of this deployment in Redis', 'trellis:default')
    .option('--lock-ms <ms>', 'task lock: a task whose agent died runs again after this long', intArg, 30_000)
    .option('--drain-ms <ms>', 'on SIGTERM, how long running tasks may finish', intArg, 10_000)
    .option('--beat-ms <ms>', 'heartbeat period; the agent counts as gone after 5 of them', intArg, 1000)
    .addOption(logLevelOption())
    .addOption(metricsPortOption())
    .addOption(metricsHostOption())
    .action(async (o) => {
      // Loaded here so `trellis store` never loads bullmq.
      const { Agent } = await import('../jobs/agent.js');
      const logger = await commandLogger('trellis-agent', o.logLevel);
      const agent = await Agent.start({
        socket: o.socket,
        redis: o.redis,
        node: o.node,
        handlers: o.handlers ?? [],
        concurrency: o.concurrency,
        prefix: o.prefix,
        lockMs: o.lockMs,
        drainMs: o.drainMs,
        beatMs: o.beatMs,
        logger,
      });
      let metrics: Awaited<ReturnType<typeof startMetrics>>;
      try {
        metrics = await startMetrics(
          o,
          async () => agent.metrics.registry,
          () => agent.health(),
        );
      } catch (e) {
        await agent.close();
        throw e;
      }
      const stopped = untilStopSignal();
      // The line scripts wait for (docs/OPERATIONS.md, "Logs").
      announce(logger, { node: agent.node, metrics: metrics?.url }, 'ready');
      const signal = await stopped;
      logger.info({ signal }, 'draining');
      await agent.close().catch(() => {});
      await metrics?.close().catch(() => {});
      // Drained: exit even if a library left a timer behind.
      process.exit(0);
    });

  program
    .command('demo')
    .description('run the main job on an embedded single-node deployment')
    .option('--readers <n>', 'reader processes', intArg, 3)
    .addOption(new Option('--size <size>', 'store memory').argParser(sizeArg).default(1024 ** 3, '1G'))
    .option('--data-dir <dir>', 'Fashion-MNIST IDX files', '/usr/share/datasets/fashion-mnist')
    .addOption(new Option('--model <kind>', 'model to train').choices(['softmax', 'mlp']).default('softmax'))
    .option('--epochs <n>', 'training epochs (default 15 softmax, 10 MLP; 10 with --cluster)', intArg)
    .option(
      '--cluster <nodes>',
      'instead: data-parallel training on N local nodes (127.0.0.1..N), all real processes',
      intArg,
    )
    .action(async (o) => {
      if (o.cluster !== undefined) {
        const { runClusterDemo } = await import('../../examples/training/cluster-demo.js');
        await runClusterDemo({ nodes: o.cluster, dataDir: o.dataDir, size: '512M', epochs: o.epochs ?? 10 });
        return;
      }
      const { runDemo } = await import('../../examples/training/demo.js');
      await runDemo({ readers: o.readers, size: o.size, dataDir: o.dataDir, model: o.model, epochs: o.epochs });
    });

  program
    .command('api')
    .description('serve the jobs HTTP API in the foreground')
    .requiredOption('--port <n>', 'TCP port (0: any free port)', intArg)
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .requiredOption('--redis <url>', 'the task queues: redis://HOST:PORT')
    .option('--meta <backend>', 'metadata backend: local or etcd://HOST:PORT', 'local')
    .option('--socket <path>', "this node's store socket")
    .option('--token-file <path>', 'file holding the token clients must present (default: $TRELLIS_TOKEN)')
    .option('--prefix <prefix>', 'key prefix of this deployment in Redis (the agents use the same)', 'trellis:default')
    .option(
      '--meta-prefix <prefix>',
      "the stores' key prefix in etcd (with --meta etcd://, no --socket)",
      '/trellis/default',
    )
    .option(
      '--store-token-file <path>',
      "the stores' RPC token, when reaching them over RPC (default: the API's token)",
    )
    // Its /metrics and /healthz are on the API's own port.
    .addOption(logLevelOption())
    .addOption(tlsFlag.cert('to serve https with (also presented to stores reached over RPC)'))
    .addOption(tlsFlag.key())
    .addOption(tlsFlag.ca('that client certificates, and stores reached over RPC, must chain to'))
    .addOption(tlsFlag.clientAuth())
    .option('--store-tls-ca <file>', 'reach stores over RPC with TLS, trusting this PEM CA bundle')
    .action(async (o) => {
      const token = readToken(o.tokenFile);
      const storeToken = o.storeTokenFile === undefined ? token : readToken(o.storeTokenFile);
      const { runApi } = await import('./api-command.js');
      await runApi({
        port: o.port,
        host: o.host,
        redis: o.redis,
        meta: o.meta,
        metaPrefix: o.metaPrefix,
        socket: o.socket,
        token,
        storeToken,
        prefix: o.prefix,
        logLevel: o.logLevel,
        tls: tlsFilesOf(o),
        storeTlsCa: o.storeTlsCa,
      });
    });

  for (const c of objectCommands()) program.addCommand(c);
  program.addCommand(ingestCommand());
  program.addCommand(jobsCommand());

  await program.parseAsync(argv);
}
