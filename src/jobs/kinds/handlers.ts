/**
 * Map handlers by name: ES modules in the agent's --handlers directories.
 * A name is a plain word (letters, digits, '-', '_'), never a path, so a job
 * spec can only pick a module the agent's operator put there; `sum` is
 * `sum.js` or `sum.mjs` in the first directory that has either.
 *
 * @example
 *   const path = await resolveHandler('sum', ['/etc/trellis/handlers']); // '/etc/trellis/handlers/sum.mjs'
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { invalidParameter, TrellisError } from '../../errors.js';

/** Letters, digits, '-' and '_', starting with a letter or digit: no separators, no dots, so no '..'. */
const HANDLER_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;
const EXTENSIONS = ['.js', '.mjs'] as const;

export function isHandlerName(name: unknown): name is string {
  return typeof name === 'string' && HANDLER_NAME.test(name);
}

/**
 * The absolute path of handler `name`: `<name>.js`, then `<name>.mjs`, in
 * each of `dirs` in order. ERR_BAD_REQUEST for a name that is not a plain
 * word; ERR_HANDLER_NOT_FOUND when no directory has it.
 */
export async function resolveHandler(name: string, dirs: string[]): Promise<string> {
  if (!isHandlerName(name)) {
    throw invalidParameter('handler', 'a name of letters, digits, "-" and "_" (no path)', name);
  }
  if (!Array.isArray(dirs)) throw invalidParameter('dirs', 'an array of directories', dirs);
  for (const dir of dirs) {
    for (const ext of EXTENSIONS) {
      const path = resolve(dir, `${name}${ext}`);
      if (await isFile(path)) return path;
    }
  }
  throw new TrellisError(
    'ERR_HANDLER_NOT_FOUND',
    `no handler ${JSON.stringify(name)} (${name}.js or ${name}.mjs) in ${dirs.length === 0 ? 'no handler directories' : dirs.join(', ')}`,
  );
}

/**
 * The names of every handler in `dirs`, sorted, each once (what an agent
 * publishes so the API can refuse an unknown handler at submit). A directory
 * that does not exist contributes nothing, as it would to resolveHandler.
 */
export async function listHandlers(dirs: string[]): Promise<string[]> {
  if (!Array.isArray(dirs)) throw invalidParameter('dirs', 'an array of directories', dirs);
  const names = new Set<string>();
  for (const dir of dirs) {
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
      throw e;
    }
    for (const entry of entries) {
      const ext = EXTENSIONS.find((x) => entry.endsWith(x));
      const name = ext && entry.slice(0, -ext.length);
      if (name && isHandlerName(name) && (await isFile(join(dir, entry)))) names.add(name);
    }
  }
  return [...names].sort();
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
