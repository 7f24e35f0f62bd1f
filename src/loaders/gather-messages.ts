/**
 * Messages between a loader and its gather workers, over the child process
 * IPC channel (JSON). Every message the loader and a worker exchange is listed
 * here, with the check the loader runs on what a worker sends.
 *
 * loader → worker: init (once), task (a batch to gather, with the ids of
 * earlier batches the loader has taken over), stop.
 * worker → loader: ready (after init), alloc (a blob was created for a group:
 * sent before anything is written, so the loader can delete the blob if the
 * worker dies after sealing it but before saying so), batch (the blob is
 * sealed and holds the group's batches), error (a failure, as {code, message}).
 */
import type { ErrorPayload } from '../errors.js';
import { TrellisError } from '../errors.js';

export interface InitMessage {
  t: 'init';
  socket: string;
  /** The local shard ids, in dataset order. */
  shards: string[];
  featureColumn?: string;
  labelColumn?: string;
  shuffle: boolean;
  seed: number;
  /** Rows the loader counted; the worker checks it sees the same. */
  rows: number;
  batchSize: number;
  /** Pre-fault the shards in the worker's mapping at start. */
  populate: boolean;
}

/** Gather batches index..index+count-1 of `epoch` into one blob (LocalRows.groupLayout). */
export interface TaskMessage {
  t: 'task';
  epoch: number;
  index: number;
  count: number;
  /** Batches of this worker the loader has adopted (pinned and deleted) since the last task. */
  acks: string[];
}

export interface StopMessage {
  t: 'stop';
}

export type ToGatherWorker = InitMessage | TaskMessage | StopMessage;

export interface ReadyMessage {
  t: 'ready';
  rows: number;
}

export interface AllocMessage {
  t: 'alloc';
  id: string;
}

/** The group of batches index..index+count-1 of `epoch` is sealed in blob `id`. */
export interface BatchMessage {
  t: 'batch';
  id: string;
  epoch: number;
  index: number;
  count: number;
}

export interface WorkerErrorMessage extends ErrorPayload {
  t: 'error';
}

export type FromGatherWorker = ReadyMessage | AllocMessage | BatchMessage | WorkerErrorMessage;

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Checks a message from a worker; a malformed one is a protocol error. */
export function checkFromGatherWorker(m: unknown): FromGatherWorker {
  const o = m as Record<string, unknown>;
  const ok =
    o !== null &&
    typeof o === 'object' &&
    ((o.t === 'ready' && isInt(o.rows)) ||
      (o.t === 'alloc' && typeof o.id === 'string') ||
      (o.t === 'batch' && typeof o.id === 'string' && isInt(o.epoch) && isInt(o.index) && isInt(o.count)) ||
      (o.t === 'error' && typeof o.code === 'string' && typeof o.message === 'string'));
  if (!ok)
    throw new TrellisError(
      'ERR_PROTOCOL',
      `a loader worker sent a malformed message: ${JSON.stringify(m)?.slice(0, 120)}`,
    );
  return o as unknown as FromGatherWorker;
}
