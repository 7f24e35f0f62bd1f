/**
 * Every failure the API answers, as `{ code, message }` with a code from the
 * one table and its status (http-status.ts). fastify raises errors of its own
 * (FST_ERR_*: a body too large, a content type with no parser, bad JSON, a
 * failed schema check); they are translated here so no fastify-shaped error
 * reaches a client, and anything without a code is a bug: ERR_INTERNAL, with
 * the details in the log rather than in the reply.
 */
import type { ErrorObject } from 'ajv';
import { type ErrorCode, type ErrorPayload, isTrellisError } from '../../errors.js';
import { validationMessage } from '../schema/validation-message.js';
import { httpStatusOf } from './http-status.js';

export interface ErrorReply {
  status: number;
  payload: ErrorPayload;
  /** False for ERR_INTERNAL: the message is generic and the cause must be logged. */
  expected: boolean;
}

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  message?: unknown;
  validation?: ErrorObject[];
  validationContext?: string;
}

/** fastify's own codes that mean the client sent something wrong, and what they become. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'ERR_PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'ERR_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'ERR_BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'ERR_BAD_REQUEST',
  FST_ERR_NOT_FOUND: 'ERR_ROUTE_NOT_FOUND',
};

const MESSAGES: Partial<Record<ErrorCode, (e: FastifyLikeError) => string>> = {
  ERR_PAYLOAD_TOO_LARGE: () => 'the request body is larger than the server accepts',
  ERR_UNSUPPORTED_MEDIA_TYPE: () => 'the request body must be JSON (content-type: application/json)',
};

export function errorReply(err: unknown, bodyLimit: number): ErrorReply {
  if (isTrellisError(err)) {
    return { status: httpStatusOf(err.code), payload: err.toPayload(), expected: err.code !== 'ERR_INTERNAL' };
  }
  const e = (typeof err === 'object' && err !== null ? err : {}) as FastifyLikeError;
  if (e.validation && e.validationContext) {
    return reply('ERR_BAD_REQUEST', validationMessage(e.validationContext, e.validation));
  }
  const mapped = typeof e.code === 'string' ? FASTIFY_CODES[e.code] : undefined;
  if (mapped === 'ERR_PAYLOAD_TOO_LARGE') {
    return reply(mapped, `the request body is larger than the server accepts (${bodyLimit} bytes)`);
  }
  if (mapped) return reply(mapped, MESSAGES[mapped]?.(e) ?? String(e.message ?? mapped));
  // Node's JSON parser, reached through fastify's, throws a plain SyntaxError with a 400 status.
  if (err instanceof SyntaxError && e.statusCode === 400)
    return reply('ERR_BAD_REQUEST', `malformed JSON: ${err.message}`);
  // Any other 4xx fastify decided on is still the client's fault, in words fastify chose.
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return reply('ERR_BAD_REQUEST', String(e.message ?? 'bad request'));
  }
  return {
    status: 500,
    payload: { code: 'ERR_INTERNAL', message: 'the API failed unexpectedly; the server log has the details' },
    expected: false,
  };
}

function reply(code: ErrorCode, message: string): ErrorReply {
  return { status: httpStatusOf(code), payload: { code, message }, expected: true };
}
