#!/usr/bin/env node
/**
 * Builds dist/ from src/ and examples/ so that it holds exactly one copy of the
 * current code: an incremental `tsc -p tsconfig.json` (about 1 s when nothing
 * changed), after deleting outputs whose source is gone (a moved or removed
 * module must not stay importable from dist/). Used by `npm run build`, the
 * test suite's global setup and the linters; `node scripts/build.mjs` runs it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');
const SOURCE_DIRS = ['src', 'examples'];
// tsc's default with outDir; kept inside dist/ so that deleting dist/ also forgets the build state.
const BUILD_INFO = join(DIST, 'tsconfig.tsbuildinfo');
const OUTPUT = /(\.d\.ts|\.js|\.js\.map|\.d\.ts\.map)$/;

function* files(dir) {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else yield p;
  }
}

/** Every .js in dist/ whose .ts no longer exists, with its maps and declarations. */
function staleOutputs() {
  const stale = [];
  for (const top of SOURCE_DIRS) {
    for (const out of files(join(DIST, top))) {
      if (!OUTPUT.test(out)) continue;
      const source = join(ROOT, relative(DIST, out).replace(OUTPUT, '.ts'));
      if (!existsSync(source)) stale.push(out);
    }
  }
  return stale;
}

/** True when some source has no .js in dist/ (e.g. a hand-deleted output, which incremental tsc would not redo). */
function missingOutputs() {
  for (const top of SOURCE_DIRS) {
    for (const src of files(join(ROOT, top))) {
      if (!src.endsWith('.ts') || src.endsWith('.d.ts')) continue;
      if (!existsSync(join(DIST, relative(ROOT, src)).replace(/\.ts$/, '.js'))) return true;
    }
  }
  return false;
}

export function build() {
  for (const f of staleOutputs()) rmSync(f);
  if (missingOutputs()) rmSync(BUILD_INFO, { force: true });
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.json'), '--incremental'], {
    cwd: ROOT,
    stdio: 'inherit',
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    build();
  } catch {
    process.exit(1); // tsc printed its errors
  }
}
