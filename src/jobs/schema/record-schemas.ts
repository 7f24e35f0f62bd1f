/**
 * JSON schemas of the records the API answers with (../job-types.ts gives
 * their TypeScript shapes). Replies go through fastify's serializer with
 * these, so a field the engine adds without a schema never leaks out
 * unannounced, and the API client checks replies against the same schemas.
 */
import { JOB_ID_PATTERN, JOB_KINDS } from './job-spec-schema.js';

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
const TASK_STATES = ['waiting', 'placed', 'running', 'succeeded', 'failed', 'cancelled'] as const;

const count = { type: 'integer', minimum: 0 } as const;
const time = { type: 'string', format: 'date-time' } as const;

export const errorReplySchema = {
  $id: 'ErrorReply',
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message'],
  properties: {
    code: { type: 'string', pattern: '^ERR_[A-Z_]+$', description: 'a code from docs/ERRORS.md' },
    message: { type: 'string' },
  },
} as const;

/** The error replies every route declares (fastify and OpenAPI both read status classes). */
export const ERROR_REPLIES = {
  '4xx': { description: 'the request was refused: { code, message }', $ref: 'ErrorReply#' },
  '5xx': { description: 'the server or the engine failed: { code, message }', $ref: 'ErrorReply#' },
} as const;

export const taskInfoSchema = {
  $id: 'TaskInfo',
  type: 'object',
  additionalProperties: false,
  required: ['index', 'node', 'state', 'attempts', 'bytesLocal', 'bytesMoved'],
  properties: {
    index: count,
    node: { type: 'string' },
    state: { type: 'string', enum: TASK_STATES },
    attempts: count,
    bytesLocal: count,
    bytesMoved: count,
    placement: {
      type: 'object',
      additionalProperties: false,
      required: ['reason'],
      properties: { reason: { type: 'string' } },
    },
    error: {
      type: 'object',
      additionalProperties: false,
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' } },
    },
  },
} as const;

export const jobResultSchema = {
  $id: 'JobResult',
  type: 'object',
  additionalProperties: false,
  properties: {
    model: { type: 'string' },
    metrics: {
      type: 'object',
      additionalProperties: false,
      properties: { accuracy: { type: 'number' }, loss: { type: 'number' } },
    },
    output: { type: 'string' },
    ranks: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['rank', 'node', 'rows', 'steps', 'paramsSha256', 'stepMs', 'resumedFrom'],
        properties: {
          rank: count,
          node: { type: 'string' },
          rows: count,
          steps: count,
          paramsSha256: { type: 'string' },
          stepMs: { $ref: 'StepTimes#' },
          resumedFrom: count,
        },
      },
    },
    effectiveBatch: count,
  },
} as const;

export const stepTimesSchema = {
  $id: 'StepTimes',
  type: 'object',
  additionalProperties: false,
  required: ['compute', 'exchange', 'waiting'],
  description: 'mean ms per step: gradient graph + optimizer, allReduce, waiting for the loader',
  properties: {
    compute: { type: 'number', minimum: 0 },
    exchange: { type: 'number', minimum: 0 },
    waiting: { type: 'number', minimum: 0 },
  },
} as const;

export const jobProgressSchema = {
  $id: 'JobProgress',
  type: 'object',
  additionalProperties: false,
  properties: {
    epoch: count,
    step: count,
    loss: { type: 'number' },
    samplesPerSec: { type: 'number', minimum: 0 },
    etaMs: { type: 'number', minimum: 0 },
    stepMs: { $ref: 'StepTimes#' },
  },
} as const;

export const jobSchema = {
  $id: 'Job',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'kind', 'state', 'createdAt', 'spec', 'tasks'],
  properties: {
    id: { type: 'string', pattern: JOB_ID_PATTERN },
    kind: { type: 'string', enum: JOB_KINDS },
    state: { type: 'string', enum: JOB_STATES },
    reason: { type: 'string', description: 'why it waits or failed, in words' },
    createdAt: time,
    startedAt: time,
    endedAt: time,
    spec: { $ref: 'JobSpec#' },
    tasks: { type: 'array', items: { $ref: 'TaskInfo#' } },
    progress: { $ref: 'JobProgress#' },
    result: { $ref: 'JobResult#' },
    error: { $ref: 'ErrorReply#' },
    warnings: { type: 'array', items: { type: 'string' } },
    placement: {
      type: 'array',
      description: "train: each rank's node and what it reads",
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['rank', 'node', 'shards', 'bytes', 'bytesLocal', 'bytesMoved'],
        properties: {
          rank: count,
          node: { type: 'string' },
          shards: count,
          bytes: count,
          bytesLocal: count,
          bytesMoved: count,
        },
      },
    },
    restarts: count,
  },
} as const;

/** What submit and cancel answer: enough to follow the job, not the whole record. */
export const jobRefSchema = {
  $id: 'JobRef',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'state'],
  properties: {
    id: { type: 'string', pattern: JOB_ID_PATTERN },
    state: { type: 'string', enum: JOB_STATES },
  },
} as const;

export const jobListSchema = {
  $id: 'JobList',
  type: 'object',
  additionalProperties: false,
  required: ['jobs'],
  properties: { jobs: { type: 'array', items: { $ref: 'Job#' } } },
} as const;

/**
 * One server-sent event's `data:` (JSON), by its `event:` name: the types in
 * JobEventData. `error` is the API's own: the stream failed after it began.
 */
export const jobEventDataSchema = {
  $id: 'JobEventData',
  type: 'object',
  additionalProperties: false,
  properties: {
    state: {
      type: 'object',
      additionalProperties: false,
      required: ['state'],
      properties: {
        state: { type: 'string', enum: JOB_STATES },
        reason: { type: 'string' },
        error: { $ref: 'ErrorReply#' },
        result: { $ref: 'JobResult#' },
      },
    },
    progress: { $ref: 'JobProgress#' },
    task: { $ref: 'TaskInfo#' },
    log: {
      type: 'object',
      additionalProperties: false,
      required: ['line'],
      properties: { line: { type: 'string' }, task: count },
    },
    error: { $ref: 'ErrorReply#' },
  },
} as const;

export const nodeInfoSchema = {
  $id: 'NodeInfo',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'instanceId', 'memoryUsed', 'memoryLimit', 'queue'],
  properties: {
    name: { type: 'string' },
    instanceId: count,
    memoryUsed: count,
    memoryLimit: count,
    queue: {
      type: 'object',
      additionalProperties: false,
      required: ['waiting', 'active'],
      properties: { waiting: count, active: count },
    },
  },
} as const;

export const nodeListSchema = {
  $id: 'NodeList',
  type: 'object',
  additionalProperties: false,
  required: ['nodes'],
  properties: { nodes: { type: 'array', items: { $ref: 'NodeInfo#' } } },
} as const;

export const datasetInfoSchema = {
  $id: 'DatasetInfo',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'shards', 'bytesByNode'],
  properties: {
    name: { type: 'string' },
    shards: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'node', 'nbytes'],
        properties: { id: { type: 'string' }, node: { type: 'string' }, nbytes: count },
      },
    },
    bytesByNode: { type: 'object', additionalProperties: count },
  },
} as const;
