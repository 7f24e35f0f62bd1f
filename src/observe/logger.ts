/**
 * The logger every component takes: the part of pino's interface they use,
 * so a library caller may pass any pino instance (or child) and components
 * need not load pino themselves. `silentLogger` is the default: a library
 * logs nothing unless given a logger; the CLI gives each long-running
 * process one (see process-logger.ts).
 */

export interface LogFn {
  (fields: object, msg?: string): void;
  (msg: string): void;
}

export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  /** A logger whose every line carries `bindings` (a request, job or task id). */
  child(bindings: Record<string, unknown>): Logger;
  isLevelEnabled(level: string): boolean;
}

const nothing: LogFn = () => {};

/** Discards everything; its children too. */
export const silentLogger: Logger = {
  trace: nothing,
  debug: nothing,
  info: nothing,
  warn: nothing,
  error: nothing,
  fatal: nothing,
  child: () => silentLogger,
  isLevelEnabled: () => false,
};
