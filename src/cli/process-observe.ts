/**
 * The flags every long-running command shares (`trellis store`, `agent`,
 * `api`): --log-level, and for the processes without an HTTP server of
 * their own --metrics-port and --metrics-host. docs/OPERATIONS.md lists them.
 */
import { InvalidArgumentError, Option } from 'commander';
import type { pino } from 'pino';
import type { Registry } from 'prom-client';
import type { Logger } from '../observe/logger.js';
import type { Health, MetricsServer } from '../observe/metrics-server.js';
import { type LogLevel, parseLogLevel } from '../observe/process-logger.js';

function levelArg(v: string): LogLevel {
  try {
    return parseLogLevel(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function portArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`expected a TCP port, got ${v}`);
  return n;
}

export function logLevelOption(): Option {
  // No commander default or .env(): processLogger falls back to $TRELLIS_LOG_LEVEL (an empty one counts as unset), then info.
  return new Option(
    '--log-level <level>',
    'fatal, error, warn, info, debug, trace or silent (default: $TRELLIS_LOG_LEVEL, else info)',
  ).argParser(levelArg);
}

export function metricsPortOption(): Option {
  return new Option('--metrics-port <port>', 'serve GET /metrics and /healthz on this port (0: off)')
    .argParser(portArg)
    .default(0);
}

export function metricsHostOption(): Option {
  return new Option('--metrics-host <host>', 'address to bind the metrics port to').default('127.0.0.1');
}

/** The process's logger, named for its command (`trellis-store`, ...). */
export async function commandLogger(name: string, level: LogLevel | undefined): Promise<Logger & pino.Logger> {
  const { processLogger } = await import('../observe/process-logger.js');
  return processLogger({ name, level });
}

/**
 * Logs a line scripts wait for (msg 'ready', 'listening') at info whatever
 * --log-level says: a quieter level must not leave a supervisor waiting.
 */
export function announce(logger: pino.Logger, fields: object, msg: string): void {
  logger.child({}, { level: 'info' }).info(fields, msg);
}

/**
 * Serves `registry` (with Node's process metrics beside it) when a port was
 * given; null when metrics are off.
 */
export async function startMetrics(
  o: { metricsPort: number; metricsHost: string },
  registry: () => Promise<Registry>,
  health: () => Health,
): Promise<MetricsServer | null> {
  if (o.metricsPort === 0) return null;
  const { collectDefaultMetrics, Registry: Reg } = await import('prom-client');
  const { serveMetrics } = await import('../observe/metrics-server.js');
  const node = new Reg();
  collectDefaultMetrics({ register: node });
  return serveMetrics({
    host: o.metricsHost,
    port: o.metricsPort,
    registry: Reg.merge([await registry(), node]),
    health,
  });
}
