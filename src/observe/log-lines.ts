/**
 * Reading a process's JSON log lines back: how scripts, tests and the
 * benchmarks wait for `trellis store` / `agent` to be ready (msg 'ready')
 * or `trellis api` to listen (msg 'listening') and learn where it is, from
 * the fields of that line rather than from a sentence's wording.
 *
 * @example
 *   const ready = findLogLine(stdoutSoFar, 'ready'); // { msg: 'ready', socket, rpc, metrics, pid, ... } or undefined
 */

export type LogLine = Record<string, unknown> & { msg: string };

/** The first complete JSON line of `text` whose msg is `msg`, parsed; undefined if there is none yet. */
export function findLogLine(text: string, msg: string): LogLine | undefined {
  let start = 0;
  for (let end = text.indexOf('\n'); end !== -1; start = end + 1, end = text.indexOf('\n', start)) {
    const line = text.slice(start, end);
    // Cheap test first: most lines are other messages.
    if (!line.startsWith('{') || !line.includes(JSON.stringify(msg))) continue;
    try {
      const v = JSON.parse(line) as unknown;
      if (typeof v === 'object' && v !== null && (v as { msg?: unknown }).msg === msg) return v as LogLine;
    } catch {
      // not a log line
    }
  }
  return undefined;
}
