/**
 * `Authorization: Bearer TOKEN` checking. Both sides are hashed first so the
 * comparison is over equal-length digests: timingSafeEqual refuses buffers
 * of different lengths, and comparing lengths first would tell an attacker
 * the token's length.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { TrellisError } from '../../errors.js';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** A checker for one token; throws ERR_UNAUTHORIZED for a missing or wrong Authorization header. */
export function bearerCheck(token: string): (authorization: string | undefined) => void {
  const expected = digest(token);
  return (authorization) => {
    const m = authorization === undefined ? null : /^Bearer +(\S+) *$/i.exec(authorization);
    if (!m) throw new TrellisError('ERR_UNAUTHORIZED', 'this API wants an Authorization: Bearer <token> header');
    if (!timingSafeEqual(digest(m[1]!), expected)) throw new TrellisError('ERR_UNAUTHORIZED', 'wrong token');
  };
}
