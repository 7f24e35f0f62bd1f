/** Runs `trellis ...` (bin/trellis.js, the built package) as a child process; resolves with its exit code and output either way. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI } from './store.js';

const exec = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function trellis(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  try {
    const r = await exec(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}
