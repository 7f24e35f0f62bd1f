/**
 * The logger of a long-running process (`trellis store`, `agent`, `api`):
 * pino JSON lines on stdout, one object per line, or pino-pretty's
 * coloured lines when stdout is a terminal (a person is reading). The
 * level comes from --log-level, else $TRELLIS_LOG_LEVEL, else info.
 *
 * stdout is written synchronously: a daemon logs a few lines a second at
 * info, and a line written before a crash or an exit must not be lost.
 */
import { pino } from 'pino';
import { TrellisError } from '../errors.js';
import type { Logger } from './logger.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A level name checked against pino's, or ERR_BAD_REQUEST naming the choices. */
export function parseLogLevel(v: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(v)) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `log level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(v)}`,
    );
  }
  return v as LogLevel;
}

export interface ProcessLoggerOptions {
  /** `name` of every line: trellis-store, trellis-agent, trellis-api. */
  name: string;
  /** Default: $TRELLIS_LOG_LEVEL, else info. */
  level?: LogLevel;
  /** Pretty-print (default: when the destination is a terminal). */
  pretty?: boolean;
  /** 1 (stdout, the default) or 2 (stderr, for a command whose stdout is its output, such as the demo). */
  destination?: 1 | 2;
}

export async function processLogger(o: ProcessLoggerOptions): Promise<Logger & pino.Logger> {
  const level = o.level ?? parseLogLevel(process.env.TRELLIS_LOG_LEVEL || 'info');
  const opts: pino.LoggerOptions = { name: o.name, level };
  const dest = o.destination ?? 1;
  const tty = (dest === 1 ? process.stdout : process.stderr).isTTY === true;
  if (o.pretty ?? tty) {
    // Loaded only for a terminal: machines read the JSON.
    const { default: pretty } = await import('pino-pretty');
    return pino(opts, pretty({ destination: dest, sync: true, colorize: tty }));
  }
  return pino(opts, pino.destination({ dest, sync: true }));
}
