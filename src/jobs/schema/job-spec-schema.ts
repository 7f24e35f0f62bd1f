/**
 * The JSON schema of a JobSpec, the one request body that carries user input
 * to the engine. It is strict on purpose: `kind` picks the branch, unknown
 * fields are refused rather than dropped (a typo such as `epoch: 5` must not
 * silently train with the default), and every number has a range, so the
 * engine can trust what it is handed. The TypeScript shape is in
 * ../job-types.ts; the API tests submit records of that type through this schema.
 */

/** Job ids become BullMQ job ids and Redis key parts: no ':' (BullMQ's separator), bounded length. */
export const JOB_ID_PATTERN = '^[A-Za-z0-9._-]{1,128}$';

/** The `:id` of the /v1/jobs/:id routes. */
export const jobIdParams = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: { id: { type: 'string', pattern: JOB_ID_PATTERN } },
} as const;

/** Handler names are file names looked up in the agents' --handlers directories: no '/', no leading dot. */
export const HANDLER_PATTERN = '^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$';

export const JOB_KINDS = ['train', 'map', 'infer'] as const;
export const MODEL_KINDS = ['softmax', 'mlp'] as const;

/** A store name (dataset, model, output), as the store accepts them. */
const storeName = { type: 'string', minLength: 1, maxLength: 1024 } as const;

/** The fields every kind accepts. */
const common = {
  id: {
    type: 'string',
    pattern: JOB_ID_PATTERN,
    description: 'client-chosen id; the same id again answers the same job',
  },
  priority: {
    type: 'integer',
    minimum: -100,
    maximum: 100,
    description: 'higher runs first among queued jobs (default 0)',
  },
  timeoutMs: {
    type: 'integer',
    minimum: 1,
    maximum: 7 * 24 * 3600 * 1000,
    description: 'the job fails with ERR_TIMEOUT after running this long (at most 7 days)',
  },
  maxRetries: {
    type: 'integer',
    minimum: 0,
    maximum: 10,
    description: 'attempts per task after the first (default 2)',
  },
} as const;

export const modelSpecSchema = {
  $id: 'ModelSpec',
  type: 'object',
  discriminator: { propertyName: 'kind' },
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind'],
      properties: { kind: { type: 'string', const: 'softmax' } },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: ['kind', 'hidden'],
      properties: {
        kind: { type: 'string', const: 'mlp' },
        hidden: {
          type: 'array',
          minItems: 1,
          maxItems: 16,
          items: { type: 'integer', minimum: 1, maximum: 65536 },
          description: 'sizes of the hidden layers',
        },
      },
    },
  ],
} as const;

export const trainSpecSchema = {
  $id: 'TrainJobSpec',
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'dataset', 'model'],
  properties: {
    kind: { type: 'string', const: 'train' },
    ...common,
    dataset: storeName,
    evalDataset: storeName,
    model: { $ref: 'ModelSpec#' },
    epochs: { type: 'integer', minimum: 1, maximum: 10000 },
    batchSize: { type: 'integer', minimum: 1, maximum: 65536 },
    learningRate: { type: 'number', exclusiveMinimum: 0, maximum: 100 },
    ranks: {
      type: 'integer',
      minimum: 1,
      maximum: 64,
      description: 'data-parallel ranks, one task each (default: one per node holding shards)',
    },
    baseBatch: {
      type: 'integer',
      minimum: 1,
      maximum: 1 << 22,
      description:
        'the batch learningRate was tuned for (default batchSize); the rate scales by ranks*batchSize/baseBatch',
    },
    warmupSteps: { type: 'integer', minimum: 0, maximum: 1_000_000, description: 'linear warm-up of a scaled rate' },
    checkpointEvery: { type: 'integer', minimum: 1, maximum: 1_000_000, description: 'steps between checkpoints' },
    maxRestarts: {
      type: 'integer',
      minimum: 0,
      maximum: 10,
      description: 'group restarts after a lost rank (default 3)',
    },
  },
} as const;

/** Copies kept of every shard of a map or infer job's output dataset (the store's MAX_REPLICAS bound). */
const outputReplicas = {
  type: 'integer',
  minimum: 1,
  maximum: 64,
  description: 'copies of every output shard, on distinct stores (default 1)',
} as const;

export const mapSpecSchema = {
  $id: 'MapJobSpec',
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'dataset', 'handler'],
  properties: {
    kind: { type: 'string', const: 'map' },
    ...common,
    dataset: storeName,
    handler: { type: 'string', pattern: HANDLER_PATTERN, description: "a module name in the agents' --handlers" },
    args: { description: 'any JSON value, handed to the handler as is' },
    output: storeName,
    replicas: outputReplicas,
  },
} as const;

export const inferSpecSchema = {
  $id: 'InferJobSpec',
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'dataset', 'model'],
  properties: {
    kind: { type: 'string', const: 'infer' },
    ...common,
    dataset: storeName,
    model: { ...storeName, description: 'name of a model stored with putModel' },
    output: storeName,
    replicas: outputReplicas,
  },
} as const;

export const jobSpecSchema = {
  $id: 'JobSpec',
  type: 'object',
  discriminator: { propertyName: 'kind' },
  oneOf: [{ $ref: 'TrainJobSpec#' }, { $ref: 'MapJobSpec#' }, { $ref: 'InferJobSpec#' }],
} as const;
