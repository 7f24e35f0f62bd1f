/**
 * onnxruntime over the store, with no copies on the way in or out.
 *
 * - Inputs: a store Tensor becomes an `ort.Tensor` over the same TypedArray
 *   view (`toOrtTensor`); onnxruntime-node reads CPU tensors in place, so a
 *   tensor of any size is handed over in constant time. Every store dtype maps
 *   (int64/uint64 as BigInt64Array/BigUint64Array, float16 as Uint16Array bits,
 *   bool as one byte per element).
 * - Outputs: `runToStore` allocates each output in the arena
 *   (`client.createTensor`), passes it to onnxruntime as a preallocated output
 *   that the kernels write into, and seals it, so other processes read the
 *   result with no copy. (onnxruntime-node 1.30 still returns a JS copy of
 *   every output next to it; that copy is dropped.)
 * - Models live in the store as blobs (`putModel`), and sessions are created
 *   from a blob's view (`ModelSession.fromStore`).
 * - Inputs are checked here, before they reach onnxruntime: names, dtypes and
 *   shapes against the model's declared inputs, with symbolic dimensions
 *   (e.g. 'B') bound consistently across inputs.
 *
 * `run` blocks the calling thread for the length of the inference: call it in
 * a worker (see InferencePool), not on a server's event loop.
 *
 * @example
 *   const modelId = await putModel(client, inferenceModel({ kind: 'softmax' }).bytes, { name: 'clf' });
 *   const s = await ModelSession.fromStore(client, 'clf');
 *   const x = (await client.get(xId)) as Tensor;          // a view over shared memory
 *   const ids = await s.runToStore(client, { X: x, W, b }); // { probs: 'o…', pred: 'o…' }
 */

import { type PutOptions, type TensorWriter, TrellisClient } from '../client/client.js';
import { type DType, isTensorLike, type Tensor, type TypedArray, validateTensor } from '../codecs/tensor.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { isObjectId } from '../protocol/messages.js';
import { type Dim, onnxProto } from './onnx-graph.js';
import { type OrtSession, type OrtSessionOptions, type OrtTensor, ort } from './ort.js';

type OrtType = OrtTensor['type'];

/**
 * What the adapter needs from a client. TrellisClient (IPC) has it all; a
 * client over RPC can load models but not write outputs in place.
 */
export type ModelStoreClient = Pick<
  TrellisClient,
  'getName' | 'putName' | 'getBlob' | 'release' | 'putBlob' | 'createTensor' | 'delete'
>;

/** The onnxruntime tensor type of each store dtype. onnxruntime-node 1.30 accepts all twelve. */
export const ORT_TYPE: Record<DType, OrtType> = {
  bool: 'bool',
  int8: 'int8',
  int16: 'int16',
  int32: 'int32',
  int64: 'int64',
  uint8: 'uint8',
  uint16: 'uint16',
  uint32: 'uint32',
  uint64: 'uint64',
  float16: 'float16',
  float32: 'float32',
  float64: 'float64',
};

/** The store dtype of an onnxruntime tensor type; ERR_UNSUPPORTED for string, int4 and uint4, which the store has no dtype for. */
export function dtypeOfOrt(type: string): DType {
  if (Object.hasOwn(ORT_TYPE, type)) return type as DType;
  throw new TrellisError('ERR_UNSUPPORTED', `onnxruntime type ${type} has no store dtype`);
}

/**
 * The tensor as an `ort.Tensor` over the same memory (no copy): `result.data`
 * is `t.data` itself. Checks dtype, shape and data first (ERR_BAD_REQUEST,
 * ERR_SIZE_MISMATCH).
 */
export function toOrtTensor(t: Tensor): OrtTensor {
  if (!isTensorLike(t)) throw invalidParameter('tensor', 'a Tensor {dtype, shape, data}', t);
  validateTensor(t);
  let data: TypedArray = t.data;
  // onnxruntime copies a Uint8ClampedArray into a new Uint8Array; a Uint8Array view over it costs nothing.
  if (data instanceof Uint8ClampedArray) data = new Uint8Array(data.buffer, data.byteOffset, data.length);
  const Ctor = ort().Tensor as unknown as new (type: OrtType, data: TypedArray, dims: readonly number[]) => OrtTensor;
  return new Ctor(ORT_TYPE[t.dtype], data, t.shape);
}

/** An onnxruntime CPU tensor as a store Tensor over the same memory (no copy), e.g. to `put` a result. */
export function fromOrtTensor(t: OrtTensor): Tensor {
  if (t.location !== 'cpu') throw new TrellisError('ERR_UNSUPPORTED', `tensor on ${t.location}, not in CPU memory`);
  const dtype = dtypeOfOrt(t.type);
  let data = t.data as unknown as TypedArray;
  // Where the runtime has Float16Array, float16 data may come as one; the store keeps the bits as Uint16Array.
  if (dtype === 'float16' && !(data instanceof Uint16Array)) {
    data = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  }
  return { dtype, shape: [...t.dims], data };
}

/**
 * Stores an ONNX model as a blob (optionally named) and returns its id.
 * The bytes are checked to decode as a ModelProto first (ERR_MODEL_INVALID).
 */
export async function putModel(client: ModelStoreClient, bytes: Uint8Array, opts: PutOptions = {}): Promise<string> {
  declaredShapes(bytes);
  return client.putBlob(bytes, opts);
}

/** A model input or output: name, dtype and declared shape (null when the model declares none). */
export interface ModelValue {
  name: string;
  dtype: DType;
  shape: Dim[] | null;
}

/**
 * Checks that `given` names every input of the model and nothing else
 * (ModelSession and InferencePool). Allocates nothing unless it throws: it
 * runs on every inference call.
 */
export function checkInputNames(inputs: readonly ModelValue[], given: string[]): void {
  for (const k of given) {
    if (!hasName(inputs, k))
      throw new TrellisError('ERR_BAD_REQUEST', `the model has no input ${k} (inputs: ${namesOf(inputs)})`);
  }
  // Every key given is an input, and keys are distinct: equal counts mean none is missing.
  if (given.length === inputs.length) return;
  const missing = inputs.find((i) => !given.includes(i.name));
  throw new TrellisError('ERR_BAD_REQUEST', `input ${missing?.name} is missing (inputs: ${namesOf(inputs)})`);
}

/** Checks that every name in `given` is an output of the model. */
export function checkOutputNames(outputs: readonly ModelValue[], given: string[]): void {
  for (const k of given) {
    if (!hasName(outputs, k))
      throw new TrellisError('ERR_BAD_REQUEST', `the model has no output ${k} (outputs: ${namesOf(outputs)})`);
  }
}

function hasName(values: readonly ModelValue[], name: string): boolean {
  for (const v of values) if (v.name === name) return true;
  return false;
}

function namesOf(values: readonly ModelValue[]): string {
  return values.map((v) => v.name).join(', ');
}

/**
 * Session options passed to onnxruntime (threads, optimization level, ...).
 * logSeverityLevel defaults to 4 (fatal only): failures come back as
 * TrellisErrors carrying the runtime's message.
 */
export type ModelSessionOptions = OrtSessionOptions;

export interface RunToStoreOptions {
  /** Names to bind to the new output objects, by output name. */
  names?: Record<string, string>;
}

/** An onnxruntime session whose inputs and outputs are store tensors. */
export class ModelSession {
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly ortSession: OrtSession,
    /** The model's inputs, in the model's order. */
    readonly inputs: readonly ModelValue[],
    /** The model's outputs, in the model's order. */
    readonly outputs: readonly ModelValue[],
  ) {}

  /**
   * A session over model bytes (a Uint8Array, e.g. a store blob's view: the
   * runtime parses it in place). ERR_MODEL_INVALID when onnxruntime cannot
   * load it; ERR_UNSUPPORTED when an input or output is not a tensor of a
   * store dtype.
   */
  static async fromBytes(bytes: Uint8Array, opts: ModelSessionOptions = {}): Promise<ModelSession> {
    const declared = declaredShapes(bytes);
    let session: OrtSession;
    try {
      // The runtime's own log repeats what comes back as TrellisErrors; opts.logSeverityLevel turns it on.
      session = await ort().InferenceSession.create(bytes, { logSeverityLevel: 4, ...opts });
    } catch (e) {
      throw new TrellisError('ERR_MODEL_INVALID', `onnxruntime cannot load the model: ${messageOf(e)}`, { cause: e });
    }
    try {
      const inputs = valuesOf(session.inputMetadata, declared, 'input');
      const outputs = valuesOf(session.outputMetadata, declared, 'output');
      return new ModelSession(session, inputs, outputs);
    } catch (e) {
      await session.release().catch(() => {});
      throw e;
    }
  }

  /** A session over a model stored as a blob, by id or by name. */
  static async fromStore(
    client: ModelStoreClient,
    model: string,
    opts: ModelSessionOptions = {},
  ): Promise<ModelSession> {
    if (typeof model !== 'string' || model.length === 0)
      throw invalidParameter('model', 'an object id or a name', model);
    const id = isObjectId(model) ? model : await client.getName(model);
    const bytes = await client.getBlob(id);
    try {
      return await ModelSession.fromBytes(bytes, opts);
    } finally {
      // The runtime holds its own parsed copy of the graph; the blob may go.
      await client.release(id);
    }
  }

  /** The underlying onnxruntime session (for what this class does not cover). */
  get session(): OrtSession {
    return this.ortSession;
  }

  /**
   * Checks inputs against the model and returns the output shapes they imply
   * (null for an output whose shape the inputs do not determine), e.g. to
   * allocate outputs in the store before run() (the infer job kind).
   */
  outputShapes(inputs: Record<string, Tensor>): Record<string, number[] | null> {
    return this.resolveOutputs(this.prepare(inputs).dims);
  }

  /**
   * Runs the model. Outputs go into `into` where given (tensors of the right
   * dtype and shape, e.g. `TensorWriter.data` views or reused buffers; they
   * must not share memory with an input) and into memory onnxruntime
   * allocates otherwise. Returns every output as a Tensor.
   */
  async run(inputs: Record<string, Tensor>, into?: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    const { feeds, dims } = this.prepare(inputs);
    let fetches: Record<string, OrtTensor | null> | undefined;
    if (into !== undefined) {
      if (typeof into !== 'object' || into === null) throw invalidParameter('into', 'an object of tensors', into);
      const shapes = this.resolveOutputs(dims);
      checkOutputNames(this.outputs, Object.keys(into));
      fetches = {};
      for (const o of this.outputs) {
        const t = into[o.name];
        if (t === undefined) {
          fetches[o.name] = null;
          continue;
        }
        checkTensor(`into.${o.name}`, t, o.dtype, shapes[o.name]);
        fetches[o.name] = toOrtTensor(t);
      }
    }
    const res = await this.runOrt(feeds, fetches);
    const out: Record<string, Tensor> = {};
    for (const o of this.outputs) out[o.name] = into?.[o.name] ?? fromOrtTensor(res[o.name] as OrtTensor);
    return out;
  }

  /**
   * Runs the model with every output written straight into a new arena
   * tensor, seals them and returns their ids by output name. The caller owns
   * the new objects (delete them when done). ERR_UNSUPPORTED when an output's
   * shape is not determined by the inputs (use `run` then).
   */
  async runToStore(
    client: ModelStoreClient,
    inputs: Record<string, Tensor>,
    opts: RunToStoreOptions = {},
  ): Promise<Record<string, string>> {
    const { feeds, dims } = this.prepare(inputs);
    const shapes = this.resolveOutputs(dims);
    const names = opts.names ?? {};
    if (typeof names !== 'object' || names === null) throw invalidParameter('names', 'an object', names);
    checkOutputNames(this.outputs, Object.keys(names));
    for (const o of this.outputs) {
      if (!shapes[o.name]) {
        throw new TrellisError('ERR_UNSUPPORTED', `output ${o.name} has a shape the inputs do not determine`);
      }
    }
    const made = await Promise.allSettled(this.outputs.map((o) => client.createTensor(o.dtype, shapes[o.name]!)));
    const writers = made.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = made.find((r) => r.status === 'rejected');
    if (failed) {
      await abortAll(writers);
      throw failed.reason;
    }
    try {
      const fetches: Record<string, OrtTensor> = {};
      this.outputs.forEach((o, i) => {
        fetches[o.name] = toOrtTensor(writers[i]);
      });
      await this.runOrt(feeds, fetches);
    } catch (e) {
      await abortAll(writers);
      throw e;
    }
    // Seal without names, then bind them: a seal refused for its name would leave its blob
    // unsealed and out of reach, while a refused putName leaves objects we can delete.
    const sealed = await Promise.allSettled(writers.map((w) => w.seal()));
    const done = sealed.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const bad = sealed.find((r) => r.status === 'rejected');
    if (bad) {
      if (done.length > 0) await client.delete(done).catch(() => {});
      throw bad.reason;
    }
    const ids: Record<string, string> = {};
    this.outputs.forEach((o, i) => {
      ids[o.name] = done[i];
    });
    const named = Object.entries(names);
    if (named.length > 0) {
      const bound = await Promise.allSettled(named.map(([out, name]) => client.putName(name, ids[out])));
      const refused = bound.find((r) => r.status === 'rejected');
      if (refused) {
        await client.delete(done).catch(() => {});
        throw refused.reason;
      }
    }
    return ids;
  }

  /** Releases the runtime's session. Safe to call twice; every run after it fails with ERR_CLOSED. */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.ortSession.release().catch(() => {});
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async runOrt(
    feeds: Record<string, OrtTensor>,
    fetches?: Record<string, OrtTensor | null>,
  ): Promise<Record<string, unknown>> {
    if (this.closing) throw new TrellisError('ERR_CLOSED', 'the model session was closed');
    try {
      // Every output is fetched (null = let the runtime allocate): some onnxruntime-node
      // versions name results by position among all outputs.
      return fetches ? await this.ortSession.run(feeds, fetches) : await this.ortSession.run(feeds);
    } catch (e) {
      throw new TrellisError('ERR_INFERENCE_FAILED', `onnxruntime failed: ${messageOf(e)}`, { cause: e });
    }
  }

  /** Validates inputs (names, dtypes, shapes) and wraps them as ort tensors, binding symbolic dimensions. */
  private prepare(inputs: Record<string, Tensor>): { feeds: Record<string, OrtTensor>; dims: Map<string, number> } {
    if (this.closing) throw new TrellisError('ERR_CLOSED', 'the model session was closed');
    if (typeof inputs !== 'object' || inputs === null) throw invalidParameter('inputs', 'an object of tensors', inputs);
    checkInputNames(this.inputs, Object.keys(inputs));
    const feeds: Record<string, OrtTensor> = {};
    const dims = new Map<string, number>();
    for (const spec of this.inputs) {
      const t = inputs[spec.name];
      if (!isTensorLike(t)) throw invalidParameter(`inputs.${spec.name}`, 'a Tensor', t);
      if (t.dtype !== spec.dtype) throw invalidParameter(`inputs.${spec.name}.dtype`, spec.dtype, t.dtype);
      feeds[spec.name] = toOrtTensor(t);
      if (spec.shape) bindShape(`input ${spec.name}`, spec.shape, t.shape, dims);
    }
    return { feeds, dims };
  }

  private resolveOutputs(dims: Map<string, number>): Record<string, number[] | null> {
    const out: Record<string, number[] | null> = {};
    for (const o of this.outputs) {
      const shape = o.shape?.map((d) => (typeof d === 'number' ? d : d === null ? undefined : dims.get(d)));
      out[o.name] = shape?.every((d) => d !== undefined) ? (shape as number[]) : null;
    }
    return out;
  }
}

/** Checks a concrete shape against a declared one, binding symbolic dimensions; ERR_SIZE_MISMATCH on disagreement. */
function bindShape(what: string, declared: Dim[], actual: number[], dims: Map<string, number>): void {
  const fmt = (s: readonly unknown[]) => `[${s.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
  if (declared.length !== actual.length) {
    throw new TrellisError('ERR_SIZE_MISMATCH', `${what} has shape ${fmt(actual)}; the model expects ${fmt(declared)}`);
  }
  declared.forEach((d, i) => {
    const a = actual[i];
    if (typeof d === 'number' && d !== a) {
      throw new TrellisError(
        'ERR_SIZE_MISMATCH',
        `${what} has shape ${fmt(actual)}; the model expects ${fmt(declared)}`,
      );
    }
    if (typeof d === 'string') {
      const bound = dims.get(d);
      if (bound === undefined) dims.set(d, a);
      else if (bound !== a) {
        throw new TrellisError('ERR_SIZE_MISMATCH', `${what} has ${d} = ${a} where another input has ${d} = ${bound}`);
      }
    }
  });
}

function checkTensor(what: string, t: Tensor, dtype: DType, shape: number[] | null): void {
  if (!isTensorLike(t)) throw invalidParameter(what, 'a Tensor', t);
  if (t.dtype !== dtype) throw invalidParameter(`${what}.dtype`, dtype, t.dtype);
  validateTensor(t);
  // onnxruntime writing into a store view would kill the process with SIGSEGV.
  if (TrellisClient.isReadOnlyView(t.data)) {
    throw invalidParameter(
      what,
      'writable memory (a TensorWriter or a plain array), not a read-only store view',
      t.data,
    );
  }
  if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))) {
    throw new TrellisError('ERR_SIZE_MISMATCH', `${what} has shape [${t.shape}]; the output has [${shape}]`);
  }
}

/** Shapes the model declares for its graph inputs and outputs, by name (null: no shape declared). */
function declaredShapes(bytes: Uint8Array): Map<string, Dim[] | null> {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength === 0)
    throw invalidParameter('model', 'the bytes of an ONNX model (a non-empty Uint8Array)', bytes);
  let model: ReturnType<ReturnType<typeof onnxProto>['ModelProto']['decode']>;
  try {
    model = onnxProto().ModelProto.decode(bytes);
  } catch (e) {
    throw new TrellisError('ERR_MODEL_INVALID', `not an ONNX model: ${messageOf(e)}`, { cause: e });
  }
  const graph = model.graph;
  if (!graph) throw new TrellisError('ERR_MODEL_INVALID', 'not an ONNX model: it has no graph');
  const out = new Map<string, Dim[] | null>();
  for (const v of [...(graph.input ?? []), ...(graph.output ?? [])]) {
    const shape = v.type?.tensorType?.shape;
    // `value` names the member of the dimension's oneof that is set.
    const dims = (shape?.dim ?? []) as { value?: string; dimValue?: unknown; dimParam?: string | null }[];
    out.set(
      v.name ?? '',
      shape
        ? dims.map((d) =>
            d.value === 'dimValue' ? toNumber(d.dimValue) : d.value === 'dimParam' ? (d.dimParam ?? null) : null,
          )
        : null,
    );
  }
  return out;
}

function valuesOf(
  meta: OrtSession['inputMetadata'],
  declared: Map<string, Dim[] | null>,
  what: 'input' | 'output',
): ModelValue[] {
  return meta.map((m) => {
    if (!m.isTensor) throw new TrellisError('ERR_UNSUPPORTED', `model ${what} ${m.name} is not a tensor`);
    const dtype = dtypeOfOrt(m.type);
    const shape = declared.has(m.name)
      ? declared.get(m.name)!
      : m.shape.map((d) => (typeof d === 'number' ? d : d === '' ? null : d));
    return { name: m.name, dtype, shape };
  });
}

function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v && typeof (v as { toNumber?: unknown }).toNumber === 'function')
    return (v as { toNumber(): number }).toNumber();
  return Number(v);
}

async function abortAll(writers: TensorWriter[]): Promise<void> {
  await Promise.all(writers.map((w) => w.abort().catch(() => {})));
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
