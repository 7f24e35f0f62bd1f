/**
 * The API's shared schemas as one set, and the Ajv options both sides of the
 * API use to check them: the server checks requests, the client (api-client.ts)
 * checks replies, with the same schemas.
 */
import { Ajv, type Options } from 'ajv';
import { inferSpecSchema, jobSpecSchema, mapSpecSchema, modelSpecSchema, trainSpecSchema } from './job-spec-schema.js';
import {
  datasetInfoSchema,
  errorReplySchema,
  jobEventDataSchema,
  jobListSchema,
  jobProgressSchema,
  jobRefSchema,
  jobResultSchema,
  jobSchema,
  nodeInfoSchema,
  nodeListSchema,
  stepTimesSchema,
  taskInfoSchema,
} from './record-schemas.js';

/** Every schema routes refer to by `$ref: 'Name#'`; each is added to fastify and appears in OpenAPI's components. */
export const SHARED_SCHEMAS = [
  modelSpecSchema,
  trainSpecSchema,
  mapSpecSchema,
  inferSpecSchema,
  jobSpecSchema,
  errorReplySchema,
  taskInfoSchema,
  jobProgressSchema,
  jobResultSchema,
  stepTimesSchema,
  jobSchema,
  jobRefSchema,
  jobListSchema,
  jobEventDataSchema,
  nodeInfoSchema,
  nodeListSchema,
  datasetInfoSchema,
] as const;

const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

/**
 * An Ajv over the shared schemas. `coerce` is for querystrings, params and
 * headers, which arrive as strings; bodies and replies are never coerced (a
 * string "5" is not an epoch count). Additional properties are refused, not
 * removed (fastify's default removes them silently), and one error is enough
 * (allErrors off: a hostile body cannot make the check expensive).
 */
export function createAjv(coerce: boolean): Ajv {
  const opts: Options = {
    coerceTypes: coerce,
    useDefaults: false,
    removeAdditional: false,
    allErrors: false,
    discriminator: true,
    verbose: true, // errors carry the offending value and schema: the message names both
    formats: { 'date-time': DATE_TIME },
    // OpenAPI annotations that Ajv does not know
    keywords: ['example'],
  };
  const ajv = new Ajv(opts);
  for (const s of SHARED_SCHEMAS) ajv.addSchema(s);
  return ajv;
}
