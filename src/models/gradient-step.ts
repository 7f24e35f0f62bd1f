/**
 * One gradient computation (forward + backward) over one flat parameter
 * buffer: every parameter of a model lives in ONE Float32Array, in
 * modelParams order, so a rank can hand its whole gradient to the exchange
 * (or write it straight into store memory) as one contiguous range, and the
 * optimizer updates one array.
 *
 * `run` feeds onnxruntime subviews of `params` (inputs are read in place) and
 * passes subviews of `grads` as preallocated outputs, so the kernels write
 * the gradient where the caller wants it: no copy on either side.
 *
 * Scaling: the graph returns the gradient of `scale × Σ rows' loss`. A rank
 * of a data-parallel group passes scale = 1 / (rows of the GLOBAL batch);
 * summing the ranks' gradients in rank order then gives the global batch's
 * mean gradient, so N ranks of batch B behave like one rank of batch N·B.
 *
 * @example
 *   await using step = await GradientStep.create({ kind: 'mlp', hidden: [256, 128], input: 'uint8', labels: 'uint8' });
 *   const params = initFlatParams(spec, 1);
 *   const grads = new Float32Array(step.layout.size);
 *   const lossSum = await step.run(params, x, y, rows, 1 / rows, grads);
 */
import { dtypeOf, type Tensor, type TypedArray } from '../codecs/tensor.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { fillInitial, fullSpec, gradientModel, type ModelSpec, modelParams } from './models.js';
import { ModelSession } from './ort-adapter.js';

/** Where each parameter of a model sits in one flat Float32Array. */
export interface ParamLayout {
  /** Parameter names, in modelParams order. */
  names: string[];
  shapes: number[][];
  /** Offset of each parameter, in floats. */
  offsets: number[];
  /** Floats in all. */
  size: number;
}

/** The flat layout of a model's parameters (modelParams order, packed, no padding). */
export function paramLayout(spec: ModelSpec): ParamLayout {
  const list = modelParams(spec);
  const offsets: number[] = [];
  let size = 0;
  for (const p of list) {
    offsets.push(size);
    size += p.shape.reduce((a, b) => a * b, 1);
  }
  return { names: list.map((p) => p.name), shapes: list.map((p) => p.shape.slice()), offsets, size };
}

/** The initial parameters as one flat Float32Array: the values initParams gives, in layout order. */
export function initFlatParams(spec: ModelSpec, seed = 1): Float32Array {
  const layout = paramLayout(spec);
  const flat = new Float32Array(layout.size);
  fillInitial(spec, seed, paramViews(layout, flat));
  return flat;
}

/** One subview of `flat` per parameter, in layout order (no copy). */
export function paramViews(layout: ParamLayout, flat: Float32Array): Float32Array[] {
  return layout.names.map((_, i) => {
    const n = layout.shapes[i].reduce((a, b) => a * b, 1);
    return flat.subarray(layout.offsets[i], layout.offsets[i] + n);
  });
}

/** The parameters as float32 Tensors over `flat`, by name (no copy), e.g. for inferenceModel's weights. */
export function paramTensors(layout: ParamLayout, flat: Float32Array): Record<string, Tensor> {
  const views = paramViews(layout, flat);
  return Object.fromEntries(
    layout.names.map((n, i) => [n, { dtype: 'float32', shape: layout.shapes[i], data: views[i] }]),
  );
}

export interface GradientStepOptions {
  /** onnxruntime intra-op threads (default 1: deterministic, and fastest for these GEMMs on 2 vCPUs). */
  threads?: number;
  /**
   * Rows per onnxruntime run (default 8192): bounds the runtime's
   * intermediate buffers. A bigger batch runs in chunks whose gradients are
   * summed in order, so the result stays deterministic.
   */
  maxRows?: number;
}

/** Forward + backward of one model in one onnxruntime session, over flat float32 parameters and gradients. */
export class GradientStep {
  private closing: Promise<void> | null = null;
  /** Gradients of the second and later chunks of a batch above maxRows (allocated on first need). */
  private scratch: Float32Array | null = null;
  private readonly xDType: string;
  private readonly yDType: string;
  private readonly features: number;

  private constructor(
    private readonly session: ModelSession,
    readonly layout: ParamLayout,
    private readonly outputs: string[],
    private readonly maxRows: number,
    spec: ReturnType<typeof fullSpec>,
  ) {
    this.xDType = spec.input === 'float' ? spec.dtype : spec.input;
    this.yDType = spec.labels;
    this.features = spec.features;
  }

  /**
   * A session over the model's gradient graph. The math is float32 (the
   * parameters are a Float32Array): spec.dtype must be float32; float64
   * features are taken with `input: 'float64'` and cast in the graph.
   */
  static async create(spec: ModelSpec, opts: GradientStepOptions = {}): Promise<GradientStep> {
    const s = fullSpec(spec);
    if (s.dtype !== 'float32') {
      throw new TrellisError(
        'ERR_UNSUPPORTED',
        "GradientStep computes in float32: spec.dtype must be 'float32' (float64 features: input 'float64')",
      );
    }
    const threads = opts.threads ?? 1;
    if (!Number.isSafeInteger(threads) || threads < 1) throw invalidParameter('threads', 'a positive integer', threads);
    const maxRows = opts.maxRows ?? 8192;
    if (!Number.isSafeInteger(maxRows) || maxRows < 1) throw invalidParameter('maxRows', 'a positive integer', maxRows);
    const g = gradientModel(s);
    const session = await ModelSession.fromBytes(g.bytes, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    return new GradientStep(
      session,
      paramLayout(s),
      g.params.map((p) => g.grads[p]),
      maxRows,
      s,
    );
  }

  /**
   * Forward + backward for the first `rows` rows of x ([rows, features], as
   * the shards store them) and y ([rows] class indices). Writes into `grads`
   * (layout.size floats) the gradient of scale × (sum over the rows of the
   * cross-entropy) and resolves to that SUM of the rows' losses (unscaled).
   * Async because onnxruntime-node's run is (it still occupies this thread
   * while it computes).
   */
  async run(
    params: Float32Array,
    x: TypedArray,
    y: TypedArray,
    rows: number,
    scale: number,
    grads: Float32Array,
  ): Promise<number> {
    if (this.closing) throw new TrellisError('ERR_CLOSED', 'the gradient step was closed');
    const size = this.layout.size;
    if (!(params instanceof Float32Array) || params.length !== size)
      throw invalidParameter('params', `a Float32Array of ${size} floats`, params);
    if (!(grads instanceof Float32Array) || grads.length !== size)
      throw invalidParameter('grads', `a Float32Array of ${size} floats`, grads);
    if (!Number.isSafeInteger(rows) || rows < 1) throw invalidParameter('rows', 'a positive integer', rows);
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw invalidParameter('scale', 'a finite number', scale);
    if (!ArrayBuffer.isView(x) || dtypeOf(x) !== this.xDType || x.length < rows * this.features)
      throw invalidParameter('x', `${this.xDType} features of at least ${rows} × ${this.features}`, x);
    if (!ArrayBuffer.isView(y) || dtypeOf(y) !== this.yDType || y.length < rows)
      throw invalidParameter('y', `${this.yDType} labels of at least ${rows} rows`, y);
    if (overlaps(grads, params)) throw invalidParameter('grads', 'memory apart from params', grads);

    const inputs: Record<string, Tensor> = paramTensors(this.layout, params);
    inputs.scale = { dtype: 'float32', shape: [], data: Float32Array.of(scale) };
    let loss = 0;
    for (let start = 0; start < rows; start += this.maxRows) {
      const n = Math.min(this.maxRows, rows - start);
      const into = start === 0 ? grads : this.scratchBuffer();
      const f = this.features;
      inputs.X = { dtype: this.xDType as Tensor['dtype'], shape: [n, f], data: x.subarray(start * f, (start + n) * f) };
      inputs.labels = { dtype: this.yDType as Tensor['dtype'], shape: [n], data: y.subarray(start, start + n) };
      const out = await this.session.run(inputs, this.outputTensors(into));
      loss += Number(out.loss.data[0]);
      if (into !== grads) for (let i = 0; i < size; i++) grads[i] += into[i];
    }
    return loss;
  }

  /** Releases the session. Safe to call twice; run after it fails with ERR_CLOSED. */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.session.close();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private outputTensors(grads: Float32Array): Record<string, Tensor> {
    const views = paramViews(this.layout, grads);
    return Object.fromEntries(
      this.outputs.map((o, i) => [o, { dtype: 'float32', shape: this.layout.shapes[i], data: views[i] }]),
    );
  }

  private scratchBuffer(): Float32Array {
    if (!this.scratch) this.scratch = new Float32Array(this.layout.size);
    return this.scratch;
  }
}

function overlaps(a: Float32Array, b: Float32Array): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}
