/**
 * `trellis api`: the job service and the HTTP API over it, in the foreground.
 * Loaded by main.ts only when this command runs, so other commands never
 * load fastify, pino or the engine.
 */
import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import { pino } from 'pino';
import { buildApi } from '../jobs/api/build-api.js';
import { startJobService } from '../jobs/engine.js';
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
}

/** Where the command meets its process; tests pass their own. */
export interface ApiCommandIo {
  /** Resolves with a signal's name when the command should stop. */
  stop: Promise<string>;
  logger: FastifyBaseLogger;
  print: (line: string) => void;
  /** The engine factory (startJobService; a test passes its own service). */
  startService?: typeof startJobService;
}

function processIo(): ApiCommandIo {
  return {
    // Read once the API listens: a signal before that ends the process at once (stop-signals.ts).
    get stop() {
      return untilStopSignal();
    },
    // Logs go to stderr as JSON lines; stdout carries only the `listening` line scripts wait for.
    logger: pino({ name: 'trellis-api' }, pino.destination(2)),
    print: (line) => process.stdout.write(`${line}\n`),
  };
}

export async function runApi(o: ApiCommandOptions, io: ApiCommandIo = processIo()): Promise<void> {
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
  const app = buildApi({ service, token: o.token, logger });
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
  io.print(`trellis api listening url=http://${host}:${port} auth=${o.token ? 'token' : 'none'} pid=${process.pid}`);
  const sig = await stopped;
  logger.info(`${sig}, shutting down`);
  // The server first (no new requests, event streams ended), then the service under it.
  try {
    await app.close();
  } finally {
    await service.close();
  }
}
