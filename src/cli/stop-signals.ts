/**
 * How the long-running commands (store, agent, api) stop: the first SIGTERM or SIGINT. Node as
 * PID 1 in a container has no default action for them (the kernel drops a signal PID 1 does not
 * handle, and `docker stop` waits out its timeout, then kills), so the handlers go in before the
 * command starts: a signal while it is still starting ends the process at once (128 + signal
 * number, as a shell reports a signal death; nothing it holds outlives the process), the first
 * one after `untilStopSignal` resolves that promise, and a second one ends a slow shutdown.
 */
import { constants } from 'node:os';

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;
export type StopSignal = (typeof SIGNALS)[number];

let installed = false;
let waiting: ((sig: StopSignal) => void) | undefined;
let stopping = false;

function onSignal(sig: StopSignal): void {
  if (waiting && !stopping) {
    stopping = true;
    waiting(sig);
    return;
  }
  process.exit(128 + constants.signals[sig]);
}

/** Handles SIGTERM and SIGINT from now on; a signal before `untilStopSignal` exits at once. */
export function installStopSignals(): void {
  if (installed) return;
  installed = true;
  for (const sig of SIGNALS) process.on(sig, () => onSignal(sig));
}

/** Resolves with the first stop signal from now on; the command then shuts down cleanly. */
export function untilStopSignal(): Promise<StopSignal> {
  installStopSignals();
  return new Promise((resolve) => {
    waiting = resolve;
  });
}
