/**
 * Runs once before any test file: rebuilds dist/ (incremental, ~1 s when
 * nothing changed), because every test imports the built package and every
 * worker thread, gather process and child store runs it too. A bare
 * `npx vitest run test/x.test.ts` therefore never tests stale code.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const script = fileURLToPath(new URL('../scripts/build.mjs', import.meta.url));
  try {
    execFileSync(process.execPath, [script], { stdio: 'inherit' });
  } catch {
    throw new Error('the build failed (tsc errors above); tests run the built package, so none can run');
  }
}
