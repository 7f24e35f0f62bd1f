/**
 * An InferencePool worker thread: connects to the store on its own, maps the
 * arena itself, creates a session from the model blob, then serves runs:
 * get the input tensors (views), run with outputs written into new arena
 * tensors, seal, release the inputs, answer with the output ids.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import type { TrellisClient } from '../client/client.js';
import { connect } from '../client/connect.js';
import { isTensorLike, type Tensor } from '../codecs/tensor.js';
import { asTrellisError, type ErrorPayload, TrellisError } from '../errors.js';
import type { FromInferenceWorker, ToInferenceWorker, WorkerInit } from './inference-messages.js';
import { ModelSession } from './ort-adapter.js';

const port = parentPort;
if (!port) throw new TrellisError('ERR_INTERNAL', 'inference-worker.js runs inside an InferencePool worker thread');
const init = workerData as WorkerInit;
const send = (m: FromInferenceWorker) => port.postMessage(m);

/** What is not a TrellisError is reported as the worker's failure, stack and all. */
const wireError = (e: unknown): ErrorPayload => asTrellisError(e, 'ERR_WORKER_FAILED').toPayload();

let client: TrellisClient | undefined;
let session: ModelSession | undefined;
const active = new Set<Promise<void>>();

async function run(m: Extract<ToInferenceWorker, { t: 'run' }>, c: TrellisClient, s: ModelSession): Promise<void> {
  const names = Object.keys(m.inputs);
  const ids = names.map((n) => m.inputs[n]);
  const values = await c.getMany(ids);
  try {
    const inputs: Record<string, Tensor> = {};
    names.forEach((n, i) => {
      const v = values[i];
      if (!isTensorLike(v)) throw new TrellisError('ERR_BAD_REQUEST', `input ${n} (${ids[i]}) is not a Tensor`);
      inputs[n] = v;
    });
    const outputs = await s.runToStore(c, inputs, m.names ? { names: m.names } : {});
    send({ t: 'done', rid: m.rid, outputs });
  } finally {
    await Promise.all(ids.map((id) => c.release(id)));
  }
}

async function main(): Promise<void> {
  try {
    client = await connect({ socket: init.socket, name: `inference worker ${threadId}` });
    session = await ModelSession.fromStore(client, init.model, init.sessionOptions);
  } catch (e) {
    send({ t: 'fatal', error: wireError(e) });
    await session?.close();
    await client?.close();
    port!.close();
    return;
  }
  const c = client;
  const s = session;
  send({ t: 'ready', inputs: [...s.inputs], outputs: [...s.outputs] });
  port!.on('message', (m: ToInferenceWorker) => {
    if (m.t === 'run') {
      const p = run(m, c, s).catch((e: unknown) => send({ t: 'err', rid: m.rid, error: wireError(e) }));
      active.add(p);
      p.finally(() => active.delete(p));
    } else if (m.t === 'exit') {
      process.exit(m.code);
    } else if (m.t === 'close') {
      void (async () => {
        await Promise.all(active);
        await s.close();
        await c.close();
        port!.close();
      })();
    }
  });
}

void main();
