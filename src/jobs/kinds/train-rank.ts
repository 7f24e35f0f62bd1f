/**
 * One rank of a data-parallel train job: synchronous SGD over the group's
 * ranks, every rank on the shards beside it.
 *
 *   start  rank 0 loads the job's checkpoint (if a previous group left one)
 *          or draws the initial parameters, and broadcasts parameters,
 *          optimizer state and loader position to every rank; the ranks
 *          also share their row counts, so all run the same number of steps
 *          per epoch (the smallest rank's full batches).
 *   step   each rank reads its next batch zero-copy through the sharded
 *          loader, computes the gradient of scale × its batch's summed loss
 *          with scale = 1 / (ranks × batch), and the ranks sum the gradients
 *          through the stores (StoreCollective.allReduce, rank order, the
 *          same bits everywhere); every rank then applies the same update,
 *          so parameters stay bit-identical without ever being sent again.
 *   every  checkpointEvery steps rank 0 writes a checkpoint (train-checkpoint.ts).
 *
 * The learning rate follows effective-batch.ts (linear scaling with warm-up,
 * Goyal et al. 2017) and decays per epoch. Time per step is split into
 * compute (gradient graph and optimizer), exchange (allReduce) and waiting
 * (the loader), reported in progress and in the rank's result.
 */
import { createHash } from 'node:crypto';
import type { TrellisClient } from '../../client/client.js';
import { StoreCollective } from '../../collective/store-collective.js';
import { TrellisError } from '../../errors.js';
import { openLoader } from '../../loaders/dataset-loader.js';
import { shardParts } from '../../loaders/shard.js';
import { GradientStep, initFlatParams, type ParamLayout, paramLayout } from '../../models/gradient-step.js';
import { learningRate } from '../../models/lr-schedule.js';
import type { ModelSpec } from '../../models/models.js';
import { Optimizer } from '../../models/optimizer.js';
import { trainDefaults } from '../../models/trainer.js';
import { DATASET_TYPENAME } from '../../store/cluster.js';
import { batchRule } from '../effective-batch.js';
import type { JobProgress, RankResult, StepTimes, TrainJobSpec } from '../job-types.js';
import type { TaskPayload } from '../task-types.js';
import type { HostContext } from './host-context.js';
import { StepRate } from './step-rate.js';
import {
  HEADER,
  loadCheckpoint,
  type Position,
  readPosition,
  saveCheckpoint,
  stateBuffer,
  writePosition,
} from './train-checkpoint.js';

/** A progress report every this many steps, and at the end of every epoch. */
export const PROGRESS_EVERY = 20;
const SEED = 1;
/** Default steps between checkpoints (spec.checkpointEvery). */
export const CHECKPOINT_EVERY = 50;
/** A collective step that waits longer than this for a peer fails the rank (the group restarts). */
const EXCHANGE_TIMEOUT_MS = 60_000;

export interface RankOutcome {
  layout: ParamLayout;
  params: Float32Array;
  /** The last epoch's mean training loss over the global batch. */
  loss: number | undefined;
  effectiveBatch: number;
  rank: RankResult;
}

export async function trainRank(payload: TaskPayload, ctx: HostContext, model: ModelSpec): Promise<RankOutcome> {
  const spec = payload.spec as TrainJobSpec;
  const rank = payload.rank ?? { index: 0, count: 1 };
  const n = rank.count;
  const client = ctx.client;
  const d = trainDefaults(model.kind);
  const epochs = spec.epochs ?? d.epochs;
  const layout = paramLayout(model);
  const P = layout.size;
  await using step = await GradientStep.create(model);
  const opt = new Optimizer(d.optimizer, P);
  const extra = opt.state().buffers.length * P;
  // One buffer size for the group: gradients plus the batch's loss; the start state goes in pieces of it.
  const size = P + 1;
  const members = payload.gang?.members ?? [{ rank: 0, instance: client.instanceId, node: ctx.node }];
  await using group = await StoreCollective.open(
    client,
    {
      group: payload.gang?.group ?? `${payload.jobId}.local`,
      rank: rank.index,
      ranks: n,
      size,
      members: members.map((m) => ({ rank: m.rank, instance: String(m.instance) })),
    },
    { timeoutMs: EXCHANGE_TIMEOUT_MS, signal: ctx.signal },
  );
  let seq = 0; // collective step ids: allReduce and broadcast share one count
  const buf = new Float32Array(size);

  // The loader reads a dataset: this rank's shards, as an unnamed one of their own.
  const dataset = await client.createDataset(undefined, ctx.localShards, {
    meta: { job: payload.jobId, rank: rank.index, attempt: payload.gang?.attempt ?? 1 },
  });
  try {
    const batch = spec.batchSize ?? d.batchSize;
    const rows = await localRows(client, ctx.localShards);
    // Every rank's rows, so all agree on the steps per epoch.
    buf.fill(0);
    buf[rank.index] = rows;
    await group.allReduce(seq++, buf);
    const allRows = Array.from(buf.subarray(0, n));
    const perEpoch = Math.min(...allRows.map((r) => Math.floor(r / batch)));
    if (perEpoch < 1) {
      throw new TrellisError(
        'ERR_BAD_REQUEST',
        `a rank has fewer rows than one batch of ${batch} (rows per rank: ${allRows.join(', ')})`,
      );
    }
    const rule = batchRule(spec, n, perEpoch);

    // The start state: rank 0's checkpoint or initial parameters, broadcast in pieces of the group's buffer size.
    const state = stateBuffer(P, extra);
    let from: Position = { step: 0, epoch: 0, index: 0 };
    if (rank.index === 0) {
      const ck = await loadCheckpoint(client, payload.jobId, state);
      if (ck) {
        from = ck;
        ctx.log(`resuming from the checkpoint at step ${ck.step} (epoch ${ck.epoch + 1}, batch ${ck.index})`);
      } else {
        state.set(initFlatParams(model, SEED), HEADER);
      }
    }
    for (let at = 0; at < state.length; at += size) {
      const piece = state.subarray(at, Math.min(at + size, state.length));
      buf.set(piece);
      await group.broadcast(seq++, buf, 0);
      piece.set(buf.subarray(0, piece.length));
    }
    from = readPosition(state);
    const params = state.subarray(HEADER, HEADER + P);
    const buffers = Array.from({ length: extra / P }, (_, i) =>
      state.subarray(HEADER + P + i * P, HEADER + P + (i + 1) * P),
    );
    opt.load({ step: from.step, buffers });
    if (from.index >= perEpoch) from = { step: from.step, epoch: from.epoch + 1, index: 0 };

    const grads = buf.subarray(0, P);
    const scale = 1 / (n * batch);
    const schedule = {
      base: rule.baseLr,
      baseBatch: rule.baseBatch,
      batch: rule.effectiveBatch,
      warmupSteps: rule.warmupSteps,
      decay: d.decay,
      stepsPerEpoch: perEpoch,
    };
    const every = spec.checkpointEvery ?? CHECKPOINT_EVERY;
    const total = epochs * perEpoch;
    const t: StepTimes = { compute: 0, exchange: 0, waiting: 0 };
    let done = from.step;
    let stepsHere = 0;
    let epochLoss = 0;
    let epochSteps = 0;
    let lastLoss: number | undefined;
    const rate = new StepRate();
    if (from.epoch < epochs) {
      await using loader = await openLoader(client, dataset, {
        batchSize: batch,
        shuffle: true,
        seed: SEED,
        epochs,
        dropLast: true,
        workers: 1,
        start: { epoch: from.epoch, index: from.index },
      });
      let t0 = performance.now();
      for await (const b of loader) {
        ctx.signal.throwIfAborted();
        if (b.index >= perEpoch) {
          t0 = performance.now();
          continue; // beyond the smallest rank's batches: every rank takes the same number of steps
        }
        const t1 = performance.now();
        const loss = await step.run(params, b.x.data, b.y.data, batch, scale, grads);
        buf[P] = loss * scale;
        const t2 = performance.now();
        await group.allReduce(seq++, buf);
        const t3 = performance.now();
        opt.step(params, grads, learningRate(schedule, done));
        const t4 = performance.now();
        t.waiting += t1 - t0;
        t.compute += t2 - t1 + (t4 - t3);
        t.exchange += t3 - t2;
        done++;
        stepsHere++;
        rate.step(t4);
        epochLoss += buf[P];
        epochSteps++;
        const last = b.index === perEpoch - 1;
        if (rank.index === 0 && done % every === 0 && done < total) {
          const next = last ? { epoch: b.epoch + 1, index: 0 } : { epoch: b.epoch, index: b.index + 1 };
          writePosition(state, { step: done, ...next });
          await saveCheckpoint(client, payload.jobId, state);
        }
        // Rank 0 speaks for the group: the loss is the global batch's, the same on every rank.
        if (rank.index === 0 && (done % PROGRESS_EVERY === 0 || last)) {
          const perSec = rate.perSecond();
          const eta = rate.etaMs(total - done);
          const p: JobProgress = {
            epoch: b.epoch,
            step: done,
            loss: epochLoss / epochSteps,
            ...(perSec === undefined ? {} : { samplesPerSec: perSec * n * batch }),
            ...(eta === undefined ? {} : { etaMs: eta }),
            stepMs: mean(t, stepsHere),
          };
          ctx.progress(p);
        }
        if (last) {
          lastLoss = epochLoss / epochSteps;
          ctx.log(`epoch ${b.epoch + 1}/${epochs}: loss ${lastLoss.toFixed(4)}`);
          epochLoss = 0;
          epochSteps = 0;
        }
        t0 = performance.now();
      }
    }
    const sha = createHash('sha256')
      .update(new Uint8Array(params.buffer, params.byteOffset, params.byteLength))
      .digest('hex');
    return {
      layout,
      params,
      loss: lastLoss,
      effectiveBatch: rule.effectiveBatch,
      rank: {
        rank: rank.index,
        node: ctx.node,
        rows,
        steps: stepsHere,
        paramsSha256: sha,
        stepMs: mean(t, stepsHere),
        resumedFrom: from.step,
      },
    };
  } finally {
    await client.delete(dataset).catch(() => {});
  }
}

function mean(t: StepTimes, steps: number): StepTimes {
  const k = steps > 0 ? 1 / steps : 0;
  return { compute: t.compute * k, exchange: t.exchange * k, waiting: t.waiting * k };
}

/** Rows in the rank's shards (from the shards' own shapes). */
async function localRows(client: HostContext['client'], shards: string[]): Promise<number> {
  const values = await client.getMany(shards);
  try {
    return values.flatMap((v, i) => shardParts(v, shards[i])).reduce((a, p) => a + p.rows, 0);
  } finally {
    await Promise.all(shards.map((id) => client.release(id)));
  }
}

/**
 * Deletes the loader dataset records of the job's earlier groups: a rank
 * whose process was killed never deleted its own (a record in the metadata
 * service, over the shards, which stay). Rank 0 calls it once its group is
 * done; the current group's ranks delete their own.
 */
export async function dropOldRankDatasets(client: TrellisClient, jobId: string, attempt: number): Promise<void> {
  const sets = await client.listGlobal({ typename: DATASET_TYPENAME, limit: 10_000 });
  const old = sets.filter(
    (d) => d.meta.job === jobId && typeof d.meta.attempt === 'number' && d.meta.attempt < attempt,
  );
  // The record only: its members are the job's input shards.
  for (const d of old) await client.delete(d.id, { deep: false }).catch(() => {});
}
