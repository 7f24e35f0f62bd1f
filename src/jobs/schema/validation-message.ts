/**
 * Turns Ajv's first error into one sentence in the project's usual form
 * ("Expected body.epochs to be >= 1 but received number 0", the wording of
 * invalidParameter in src/errors.ts), so an HTTP client reads the same kind of
 * message as a library caller. Ajv's own text ("must be >= 1", with a JSON
 * pointer) names neither the field in a way people read nor the bad value.
 */
import type { ErrorObject } from 'ajv';
import { invalidParameter } from '../../errors.js';
import { JOB_KINDS, MODEL_KINDS } from './job-spec-schema.js';

/** `body` + `/model/hidden/0` → `body.model.hidden[0]`. */
function fieldName(context: string, instancePath: string): string {
  let name = context;
  for (const part of instancePath.split('/').slice(1)) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    name += /^\d+$/.test(key) ? `[${key}]` : `.${key}`;
  }
  return name;
}

/** What each discriminated schema accepts as its tag, by the schema's $id. */
const TAG_VALUES: Record<string, readonly string[]> = { JobSpec: JOB_KINDS, ModelSpec: MODEL_KINDS };

function tagValues(e: ErrorObject): string | undefined {
  const values = TAG_VALUES[(e.parentSchema as { $id?: string } | undefined)?.$id ?? ''];
  return values?.map((v) => JSON.stringify(v)).join(', ');
}

export function validationMessage(context: string, errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return `${context} is invalid`;
  const name = fieldName(context, e.instancePath);
  switch (e.keyword) {
    case 'additionalProperties':
      return `${name} has an unknown field ${JSON.stringify(e.params.additionalProperty)}`;
    case 'required':
      return `${name} is missing the field ${JSON.stringify(e.params.missingProperty)}`;
    case 'discriminator': {
      const tag = String(e.params.tag);
      const allowed = tagValues(e);
      const expected = allowed ? `one of ${allowed}` : 'a known value';
      if (e.params.error === 'tag' && (e.data as Record<string, unknown>)?.[tag] === undefined) {
        return `${name} is missing the field ${JSON.stringify(tag)} (${expected})`;
      }
      return invalidParameter(`${name}.${tag}`, expected, (e.data as Record<string, unknown>)?.[tag]).message;
    }
    case 'const':
      return invalidParameter(name, JSON.stringify(e.params.allowedValue), e.data).message;
    case 'enum':
      return invalidParameter(
        name,
        `one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`,
        e.data,
      ).message;
    case 'pattern':
      return invalidParameter(name, `a string matching ${e.params.pattern}`, e.data).message;
    case 'minLength':
      return invalidParameter(name, `a string of at least ${e.params.limit} characters`, e.data).message;
    case 'maxLength':
      return invalidParameter(name, `a string of at most ${e.params.limit} characters`, e.data).message;
    case 'minItems':
      return invalidParameter(name, `an array of at least ${e.params.limit} items`, e.data).message;
    case 'maxItems':
      return invalidParameter(name, `an array of at most ${e.params.limit} items`, e.data).message;
    case 'type':
      return invalidParameter(name, `of type ${e.params.type}`, e.data).message;
    default: {
      // minimum, maximum, exclusiveMinimum, ...: Ajv says "must be >= 1"
      const said = e.message ?? 'must be valid';
      return said.startsWith('must be ')
        ? invalidParameter(name, said.slice('must be '.length), e.data).message
        : `${name} ${said}`;
    }
  }
}
