import { readFileSync } from 'node:fs';
import { ERROR_CODES, TrellisError } from 'trellis';
import { describe, expect, it } from 'vitest';

describe('error table', () => {
  const doc = readFileSync(new URL('../docs/ERRORS.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \|/gm)].map((m) => m[1]));

  it('documents every code in src/errors.ts, and nothing else', () => {
    expect([...documented].sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it('round-trips errors through their wire form', () => {
    for (const code of Object.keys(ERROR_CODES) as (keyof typeof ERROR_CODES)[]) {
      const back = TrellisError.fromPayload(new TrellisError(code, 'x').toPayload());
      expect(back).toBeInstanceOf(TrellisError);
      expect(back.code).toBe(code);
    }
    expect(TrellisError.fromPayload({ code: 'ERR_MADE_UP', message: 'm' }).code).toBe('ERR_PROTOCOL');
  });
});
