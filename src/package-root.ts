/**
 * Where the package's files are, whether this module runs from the build
 * (dist/src/package-root.js) or from sources (src/package-root.ts). Everything
 * that looks up a file of the package (the addon, package.json, worker
 * scripts) goes through here, so the rule lives once.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TrellisError } from './errors.js';

const here = fileURLToPath(import.meta.url);
export const PACKAGE_ROOT = resolve(dirname(here), here.endsWith('.ts') ? '..' : '../..');

/**
 * A worker's entry point in the build (e.g. 'loaders/gather-worker.js').
 * Workers always run the built JavaScript: a worker thread or child process
 * cannot load TypeScript sources.
 */
export function builtScript(relativeToSrc: string): string {
  const script = join(PACKAGE_ROOT, 'dist/src', relativeToSrc);
  if (!existsSync(script)) {
    throw new TrellisError('ERR_WORKER_FAILED', `worker script ${script} is missing; build with tsc first`);
  }
  return script;
}
