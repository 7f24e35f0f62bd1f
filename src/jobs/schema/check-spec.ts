/**
 * The one check of a JobSpec for callers of the engine that do not come
 * through HTTP (the API's route validates the body with the same schema
 * before the engine sees it): the JSON schema of job-spec-schema.ts, compiled
 * once, with the API's messages. One set of rules, so a spec the library
 * accepts is a spec the API accepts.
 */
import type { ValidateFunction } from 'ajv';
import { TrellisError } from '../../errors.js';
import type { JobSpec } from '../job-types.js';
import { createAjv } from './schema-set.js';
import { validationMessage } from './validation-message.js';

let validate: ValidateFunction | undefined;

export function checkSpec(spec: unknown): asserts spec is JobSpec {
  validate ??= createAjv(false).getSchema('JobSpec#');
  if (!validate) throw new TrellisError('ERR_INTERNAL', 'the JobSpec schema is not registered');
  if (!validate(spec)) throw new TrellisError('ERR_BAD_REQUEST', validationMessage('spec', validate.errors));
}
