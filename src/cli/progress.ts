/**
 * A progress bar on stderr for long transfers (cli-progress), shown only
 * when stderr is a terminal: a pipe or a log file gets nothing, so scripts
 * read clean output.
 */
import { formatSize } from './size.js';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

const NONE: Progress = { update() {}, stop() {} };

/** Transfers below this finish before a bar helps. */
export const PROGRESS_MIN_BYTES = 4 * 1024 * 1024;

export async function progressBar(
  label: string,
  total: number,
  stream: NodeJS.WriteStream = process.stderr,
): Promise<Progress> {
  if (!stream.isTTY || total < PROGRESS_MIN_BYTES) return NONE;
  // Loaded here: only a terminal needs it.
  const { SingleBar } = (await import('cli-progress')).default;
  const bar = new SingleBar({
    stream,
    format: `${label} [{bar}] {percentage}% {doneSize}/{totalSize} eta {eta_formatted}`,
    hideCursor: true,
    clearOnComplete: false,
    etaBuffer: 50,
  });
  bar.start(total, 0, { doneSize: formatSize(0), totalSize: formatSize(total) });
  let shown = total;
  return {
    update: (done, t) => {
      if (t !== shown) {
        shown = t;
        bar.setTotal(t);
      }
      bar.update(done, { doneSize: formatSize(done), totalSize: formatSize(t) });
    },
    stop: () => bar.stop(),
  };
}
