import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { IPC_MESSAGE_TYPES } from '../dist/src/protocol/messages.js';
import { RPC_MESSAGE_TYPES } from '../dist/src/protocol/rpc-messages.js';

/** Message types with a table row of their own (first cell a code span) in one part of docs/PROTOCOL.md. */
function documented(part: string): string[] {
  return [...new Set([...part.matchAll(/^\| `([A-Za-z]+)` \|/gm)].map((m) => m[1]))].sort();
}

describe('docs/PROTOCOL.md', () => {
  const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
  const rpcAt = doc.indexOf('\n# RPC protocol');

  it('has an IPC part and an RPC part', () => {
    expect(rpcAt).toBeGreaterThan(0);
  });

  it('documents every IPC message in src/protocol/messages.ts, and nothing else', () => {
    expect(documented(doc.slice(0, rpcAt))).toEqual([...IPC_MESSAGE_TYPES].sort());
  });

  it('documents every RPC message in src/protocol/rpc-messages.ts, and nothing else', () => {
    expect(documented(doc.slice(rpcAt))).toEqual([...RPC_MESSAGE_TYPES].sort());
  });
});
