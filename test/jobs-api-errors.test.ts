/**
 * The HTTP status of every error code: docs/ERRORS.md's table agrees with
 * src/jobs/api/http-status.ts, and every code has one.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../dist/src/errors.js';
import { httpStatusOf } from '../dist/src/jobs/api/http-status.js';

describe('HTTP statuses of error codes', () => {
  it('docs/ERRORS.md lists every code under the status http-status.ts gives it', () => {
    const doc = readFileSync(new URL('../docs/ERRORS.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('## HTTP statuses'));
    const documented: Record<string, number> = {};
    for (const m of section.matchAll(/^\| (\d{3}) \| (.*) \|$/gm)) {
      for (const c of m[2]!.matchAll(/`(ERR_[A-Z_]+)`/g)) documented[c[1]!] = Number(m[1]);
    }
    const actual = Object.fromEntries((Object.keys(ERROR_CODES) as ErrorCode[]).map((c) => [c, httpStatusOf(c)]));
    expect(documented).toEqual(actual);
  });
});
