/**
 * `trellis api`: the job service and the HTTP API over it, in the foreground.
 * Loaded by main.ts only when this command runs, so other commands never
 * load fastify, pino or the engine.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import { buildApi } from '../jobs/api/build-api.js';
import { startJobService } from '../jobs/engine.js';
import { type LogLevel, processLogger } from '../observe/process-logger.js';
import { untilStopSignal } from './stop-signals.js';

export interface ApiCommandOptions {
  port: number;
  host: string;
  redis: string;
  meta?: string;
  socket?: string;
  token?: string;
  /** Key prefix of the deployment in Redis (default trellis:default). */
  prefix?: string;
  /** The stores' key prefix in etcd, when reaching them through etcd. */
  metaPrefix?: string;
  /** The stores' RPC token (default: `token`, the API's own). */
  storeToken?: string;
  /** Default: $TRELLIS_LOG_LEVEL, else info. */
  logLevel?: LogLevel;
}

/** Where the command meets its process; tests pass their own. */
export interface ApiCommandIo {
  /** Resolves with a signal's name when the command should stop. */
  stop: Promise<string>;
  /** Every line goes here, the `listening` line scripts wait for too (msg 'listening', field url). */
  logger: FastifyBaseLogger;
  /** The engine factory (startJobService; a test passes its own service). */
  startService?: typeof startJobService;
}

async function processIo(level: LogLevel | undefined): Promise<ApiCommandIo> {
  // pino JSON lines on stdout (pretty on a terminal), as the store and the agent log.
  const logger = (await processLogger({ name: 'trellis-api', level })) as FastifyBaseLogger;
  return {
    // Read once the API listens: a signal before that ends the process at once (stop-signals.ts).
    get stop() {
      return untilStopSignal();
    },
    logger,
  };
}

export async function runApi(o: ApiCommandOptions, given?: ApiCommandIo): Promise<void> {
  const io = given ?? (await processIo(o.logLevel));
  const { logger } = io;
  const service = await (io.startService ?? startJobService)({
    redis: o.redis,
    meta: o.meta,
    socket: o.socket,
    token: o.storeToken ?? o.token,
    ...(o.prefix === undefined ? {} : { prefix: o.prefix }),
    ...(o.metaPrefix === undefined ? {} : { metaPrefix: o.metaPrefix }),
    logger,
  });
  const app = buildApi({ service, token: o.token, logger, processMetrics: given === undefined });
  try {
    await app.listen({ port: o.port, host: o.host });
  } catch (e) {
    await app.close();
    await service.close();
    throw e;
  }
  const { port } = app.server.address() as AddressInfo;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  const stopped = io.stop;
  // At info whatever the level: scripts wait for this line.
  logger
    .child({}, { level: 'info' })
    .info({ url: `http://${host}:${port}`, auth: o.token ? 'token' : 'none' }, 'listening');
  const signal = await stopped;
  logger.info({ signal }, 'shutting down');
  // The server first (no new requests, event streams ended), then the service under it.
  try {
    await app.close();
  } finally {
    await service.close();
  }
}
