/**
 * Every message of the wire protocols is documented in docs/PROTOCOL.md, as
 * errors-documented.test.ts does for error codes. The messages are read from
 * the built declarations of src/protocol/ (every `t: '<type>'` a message type
 * declares), so the check follows the code wherever in that folder a message
 * is defined.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const PROTOCOL_DIR = new URL('../dist/src/protocol/', import.meta.url);
const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');

/** Message types declared in src/protocol/ (requests, and replies where they have a type of their own). */
const declared = new Set(
  readdirSync(PROTOCOL_DIR)
    .filter((f) => f.endsWith('.d.ts'))
    .flatMap((f) =>
      [...readFileSync(new URL(f, PROTOCOL_DIR), 'utf8').matchAll(/\bt: '([A-Za-z]+)'/g)].map((m) => m[1]),
    ),
);

/** Names in the first cell of a message table row ("| `get` |", "| `make`, `delete`, … |"; not the "| `t` |" header). */
const tabled = new Set(
  [...doc.matchAll(/^\| (`[A-Za-z]+`(?:, `[A-Za-z]+`)*) \|/gm)]
    .flatMap((m) => m[1].split(', ').map((s) => s.slice(1, -1)))
    .filter((name) => name !== 't'),
);
/** Messages shown as frames in the text, e.g. {"t":"fds",…} and the {"t":"ok",…} / {"t":"err",…} answers. */
const shown = new Set([...doc.matchAll(/\{"t":"([A-Za-z]+)"/g)].map((m) => m[1]));

describe('protocol documentation', () => {
  it('documents every message type in src/protocol/', () => {
    expect(declared.size).toBeGreaterThan(20); // the reading of the declarations found the messages
    expect([...declared].filter((t) => !tabled.has(t) && !shown.has(t)).sort()).toEqual([]);
  });

  it('documents no message the code does not have', () => {
    expect([...tabled].filter((t) => !declared.has(t)).sort()).toEqual([]);
  });
});
