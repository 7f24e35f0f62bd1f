/**
 * The shared token of a command (`store`, `status --rpc`, `api`, `jobs`):
 * from --token-file, else $TRELLIS_TOKEN, else none. One function, so every
 * command trims, checks and names its source the same way.
 */
import { readFileSync } from 'node:fs';
import { TrellisError } from '../errors.js';

export function readToken(file: string | undefined): string | undefined {
  const token = file === undefined ? process.env.TRELLIS_TOKEN?.trim() : readFileSync(file, 'utf8').trim();
  if (!token) return undefined;
  const where = file === undefined ? '$TRELLIS_TOKEN' : `the token in ${file}`;
  if (token.length < 16) throw new TrellisError('ERR_BAD_REQUEST', `${where} is shorter than 16 characters`);
  return token;
}
