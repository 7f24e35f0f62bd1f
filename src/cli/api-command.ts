/**
 * `trellis api`: the job service and the HTTP API over it, in the foreground.
 * Loaded by main.ts only when this command runs, so other commands never
 * load fastify, pino or the engine.
 */
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { buildApi } from '../jobs/api/build-api.js';
import { startJobService } from '../jobs/engine.js';

export interface ApiCommandOptions {
  port: number;
  host: string;
  redis: string;
  meta?: string;
  socket?: string;
  token?: string;
}

export async function runApi(o: ApiCommandOptions): Promise<void> {
  // Logs go to stderr as JSON lines; stdout carries only the `listening` line scripts wait for.
  const logger = pino({ name: 'trellis-api' }, pino.destination(2));
  const service = await startJobService({ redis: o.redis, meta: o.meta, socket: o.socket, token: o.token, logger });
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
  process.stdout.write(
    `trellis api listening url=http://${host}:${port} auth=${o.token ? 'token' : 'none'} pid=${process.pid}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      logger.info(`${sig}, shutting down`);
      // The server first (no new requests, event streams ended), then the service under it.
      app
        .close()
        .then(() => service.close())
        .then(resolve, (e) => {
          logger.error({ err: e }, 'shutdown failed');
          process.exitCode = 1;
          resolve();
        });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
