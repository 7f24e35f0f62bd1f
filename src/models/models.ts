/**
 * Classifiers built in code as ONNX graphs: softmax (multinomial logistic)
 * regression and a ReLU MLP with any number of hidden layers, each as an
 * inference graph and as a gradient graph — forward pass, summed
 * cross-entropy loss and the backward pass written out by hand from ONNX ops
 * — whose outputs are the loss and every parameter's gradient. The update
 * itself is plain JS (optimizer.ts), so data-parallel ranks can sum their
 * gradients before applying one identical step.
 *
 * Conventions (every graph):
 * - `X`: [B, features], float (the model's dtype) with pixels already in
 *   [0, 1]; or, with `input: 'uint8'`, raw bytes that the graph scales by 1/255.
 * - `labels`: [B] class indices, int64 by default (`labels: 'int32' | 'uint8'`
 *   takes those as they are stored, e.g. Fashion-MNIST's uint8 labels).
 * - Parameters: softmax `W` [features, classes], `b` [classes]; an MLP with
 *   hidden sizes [h1, ..., hL] has `W1` [features, h1], `b1` [h1], ...,
 *   `W<L+1>` [hL, classes], `b<L+1>` [classes] (one hidden layer: W1 b1 W2 b2).
 * - Gradient graph: inputs X, labels, `scale` (a scalar of the model's dtype)
 *   and the parameters; outputs `loss` (scalar: the SUM over the rows of
 *   their cross-entropy) and `<param>_grad` for every parameter: the gradient
 *   of scale × loss. scale = 1/B gives the batch mean's gradient.
 * - Inference outputs: `probs` [B, classes] (softmax) and `pred` [B] int64 (argmax).
 *
 * @example
 *   const spec = { kind: 'mlp', hidden: [256, 128] } as const;
 *   const g = gradientModel(spec);                 // g.bytes: ModelProto
 *   const params = initParams(spec, 42);           // { W1, b1, W2, b2, W3, b3 } as Tensors
 *   const s = await ModelSession.fromBytes(g.bytes);
 *   const out = await s.run({ X, labels, scale: tensor('float32', [], Float32Array.of(1 / B)), ...params });
 *   // out.loss, out.W1_grad, ... (GradientStep does this over one flat Float32Array)
 */
import { type DType, type Tensor, tensor } from '../codecs/tensor.js';
import { invalidParameter } from '../errors.js';
import { seededRandom } from '../random.js';
import { GraphBuilder, ONNX_ELEM_TYPE, type TensorSpec } from './onnx-graph.js';

export interface ModelSpec {
  kind: 'softmax' | 'mlp';
  /** Input features per sample (784 for 28x28 images). */
  features?: number;
  /** Number of classes (10). */
  classes?: number;
  /** Hidden layer sizes of the MLP, input side first ([128]; a bare number is one layer); ignored for softmax. */
  hidden?: number | number[];
  /** dtype of X (unless uint8), the weights and all the math: float32 (default) or float64. */
  dtype?: 'float32' | 'float64';
  /**
   * X as floats already in [0, 1] ('float', default: of `dtype`; 'float32' or
   * 'float64': of that dtype, cast to `dtype` in the graph when they differ)
   * or as uint8 pixels scaled by 1/255 in the graph.
   */
  input?: 'float' | 'float32' | 'float64' | 'uint8';
  /** dtype of the labels input (int64 default). */
  labels?: 'int64' | 'int32' | 'uint8';
}

/** A spec with every default filled in and `hidden` as a list. */
export type FullModelSpec = Required<Omit<ModelSpec, 'hidden'>> & { hidden: number[] };

/** A model built in code: its ModelProto bytes and its declared inputs and outputs. */
export interface BuiltModel {
  bytes: Uint8Array;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

/** A gradient graph: the parameters it takes and which output holds each one's gradient. */
export interface GradientModel extends BuiltModel {
  params: string[];
  grads: Record<string, string>;
}

/** The parameters of a model, in input order, with their shapes. */
export function modelParams(spec: ModelSpec): { name: string; shape: number[] }[] {
  const s = fullSpec(spec);
  if (s.kind === 'softmax') {
    return [
      { name: 'W', shape: [s.features, s.classes] },
      { name: 'b', shape: [s.classes] },
    ];
  }
  const widths = [s.features, ...s.hidden, s.classes];
  return widths.slice(1).flatMap((out, i) => [
    { name: `W${i + 1}`, shape: [widths[i], out] },
    { name: `b${i + 1}`, shape: [out] },
  ]);
}

/**
 * Initial parameters, deterministic for a seed: softmax regression starts at
 * zero (its loss is convex); the MLP's weights are uniform with He scaling
 * for the layers that feed a ReLU and Glorot scaling for the output layer,
 * biases zero.
 */
export function initParams(spec: ModelSpec, seed = 1): Record<string, Tensor> {
  const s = fullSpec(spec);
  const out: Record<string, Tensor> = {};
  const list = modelParams(s);
  for (const p of list) out[p.name] = tensor(s.dtype, p.shape);
  fillInitial(
    s,
    seed,
    list.map((p) => out[p.name].data as Float32Array | Float64Array),
  );
  return out;
}

/**
 * Writes the initial values into one array per parameter (modelParams order),
 * drawing from one seeded stream in that order, so a flat buffer and separate
 * tensors get the same values.
 */
export function fillInitial(spec: ModelSpec, seed: number, into: (Float32Array | Float64Array)[]): void {
  const s = fullSpec(spec);
  const list = modelParams(s);
  if (!Array.isArray(into) || into.length !== list.length || into.some((d, k) => d.length !== size(list[k].shape)))
    throw invalidParameter('into', `one array per parameter of ${s.kind} (${list.map((p) => p.name)})`, into);
  for (const d of into) d.fill(0);
  if (s.kind !== 'mlp') return;
  const rand = seededRandom(seed, 0);
  list.forEach((p, k) => {
    if (p.shape.length !== 2) return;
    const [fanIn, fanOut] = p.shape;
    const last = k === list.length - 2;
    const a = last ? Math.sqrt(6 / (fanIn + fanOut)) : Math.sqrt(6 / fanIn);
    const d = into[k];
    for (let i = 0; i < d.length; i++) d[i] = (rand() * 2 - 1) * a;
  });
}

/**
 * The inference graph: X (and the parameters, unless `weights` are given, in
 * which case they are baked into the model as initializers) → probs, pred.
 */
export function inferenceModel(spec: ModelSpec, opts: { weights?: Record<string, Tensor> } = {}): BuiltModel {
  const s = fullSpec(spec);
  const g = new GraphBuilder(`${s.kind}_inference`);
  const X = g.input('X', xDType(s), ['B', s.features]);
  const params: Record<string, string> = {};
  for (const p of modelParams(s)) {
    const w = opts.weights?.[p.name];
    if (opts.weights && !w) throw invalidParameter(`weights.${p.name}`, `a ${s.dtype} tensor`, w);
    if (w) {
      if (w.dtype !== s.dtype || w.shape.join() !== p.shape.join()) {
        throw invalidParameter(`weights.${p.name}`, `a ${s.dtype} tensor of shape [${p.shape}]`, w.shape);
      }
      params[p.name] = g.initializer(p.name, w);
    } else {
      params[p.name] = g.input(p.name, s.dtype, p.shape);
    }
  }
  const f = forward(g, s, X, params);
  g.op('Softmax', [f.logits], { axis: 1 }, 'probs');
  g.op('ArgMax', [f.logits], { axis: 1, keepdims: 0 }, 'pred');
  g.output('probs', s.dtype, ['B', s.classes]);
  g.output('pred', 'int64', ['B']);
  return { bytes: g.build(), inputs: g.inputSpecs(), outputs: g.outputSpecs() };
}

/**
 * The gradient graph: X, labels, scale and the parameters → loss (the sum of
 * the rows' cross-entropy) and `<param>_grad`, the gradient of scale × loss.
 */
export function gradientModel(spec: ModelSpec): GradientModel {
  const s = fullSpec(spec);
  const g = new GraphBuilder(`${s.kind}_gradient`);
  const X = g.input('X', xDType(s), ['B', s.features]);
  const labels = g.input('labels', s.labels, ['B']);
  const scale = g.input('scale', s.dtype, []);
  const list = modelParams(s);
  const params: Record<string, string> = {};
  for (const p of list) params[p.name] = g.input(p.name, s.dtype, p.shape);
  const f = forward(g, s, X, params);
  const to = ONNX_ELEM_TYPE[s.dtype];

  // Loss: the sum over the rows of -log softmax(logits)[label].
  const logp = g.op('LogSoftmax', [f.logits], { axis: 1 });
  const idx = s.labels === 'int64' ? labels : g.op('Cast', [labels], { to: ONNX_ELEM_TYPE.int64 });
  const classes = g.constant(
    Array.from({ length: s.classes }, (_, i) => i),
    'int64',
  );
  const onehot = g.op('Cast', [g.op('Equal', [g.op('Unsqueeze', [idx, g.constant([1], 'int64')]), classes])], { to });
  g.op('Neg', [g.op('ReduceSum', [g.op('Mul', [onehot, logp])], { keepdims: 0 })], {}, 'loss');

  // d (scale × loss) / d logits = (softmax - onehot) × scale.
  let dz = g.op('Mul', [g.op('Sub', [g.op('Exp', [logp]), onehot]), scale]);
  const axis0 = g.constant([0], 'int64');
  const zero = g.constant(0, s.dtype);
  const grads: Record<string, string> = {};
  // Layer k (1-based) maps f.acts[k-1] to f.pre[k-1]; walk them from the output back.
  const layers = list.length / 2;
  for (let k = layers; k >= 1; k--) {
    const [w, b] = [list[2 * k - 2].name, list[2 * k - 1].name];
    grads[w] = g.op('Gemm', [f.acts[k - 1], dz], { transA: 1 }, `${w}_grad`);
    grads[b] = g.op('ReduceSum', [dz, axis0], { keepdims: 0 }, `${b}_grad`);
    if (k > 1) {
      const dh = g.op('Gemm', [dz, params[w]], { transB: 1 });
      // ReLU passes the gradient where its input was positive.
      dz = g.op('Where', [g.op('Greater', [f.pre[k - 2], zero]), dh, zero]);
    }
  }
  g.output('loss', s.dtype, []);
  for (const p of list) g.output(grads[p.name], s.dtype, p.shape);
  return {
    bytes: g.build(),
    inputs: g.inputSpecs(),
    outputs: g.outputSpecs(),
    params: list.map((p) => p.name),
    grads,
  };
}

/**
 * Forward pass up to the logits; also what the backward pass needs: each
 * layer's input (`acts`, the scaled X first) and each hidden layer's
 * pre-activation (`pre`).
 */
function forward(
  g: GraphBuilder,
  s: FullModelSpec,
  X: string,
  p: Record<string, string>,
): { logits: string; acts: string[]; pre: string[] } {
  const to = ONNX_ELEM_TYPE[s.dtype];
  const x =
    s.input === 'uint8'
      ? g.op('Mul', [g.op('Cast', [X], { to }), g.constant(1 / 255, s.dtype)])
      : xDType(s) === s.dtype
        ? X
        : g.op('Cast', [X], { to });
  if (s.kind === 'softmax') return { logits: g.op('Gemm', [x, p.W, p.b]), acts: [x], pre: [] };
  const acts = [x];
  const pre: string[] = [];
  s.hidden.forEach((_, i) => {
    const z = g.op('Gemm', [acts[i], p[`W${i + 1}`], p[`b${i + 1}`]]);
    pre.push(z);
    acts.push(g.op('Relu', [z]));
  });
  const out = s.hidden.length + 1;
  return { logits: g.op('Gemm', [acts[out - 1], p[`W${out}`], p[`b${out}`]]), acts, pre };
}

function xDType(s: FullModelSpec): DType {
  return s.input === 'float' ? s.dtype : s.input;
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The spec with its defaults, checked (ERR_BAD_REQUEST naming the field). */
export function fullSpec(spec: ModelSpec): FullModelSpec {
  if (!spec || (spec.kind !== 'softmax' && spec.kind !== 'mlp'))
    throw invalidParameter('spec.kind', "'softmax' or 'mlp'", spec?.kind);
  const hidden = spec.hidden ?? [128];
  const s: FullModelSpec = {
    kind: spec.kind,
    features: spec.features ?? 784,
    classes: spec.classes ?? 10,
    hidden: Array.isArray(hidden) ? hidden.slice() : [hidden],
    dtype: spec.dtype ?? 'float32',
    input: spec.input ?? 'float',
    labels: spec.labels ?? 'int64',
  };
  for (const k of ['features', 'classes'] as const) {
    if (!Number.isSafeInteger(s[k]) || s[k] < 1) throw invalidParameter(`spec.${k}`, 'a positive integer', s[k]);
  }
  if (s.kind === 'mlp') {
    if (s.hidden.length < 1 || s.hidden.length > 64)
      throw invalidParameter('spec.hidden', 'a positive integer or a list of 1 to 64 of them', spec.hidden);
    s.hidden.forEach((h, i) => {
      if (!Number.isSafeInteger(h) || h < 1) throw invalidParameter(`spec.hidden[${i}]`, 'a positive integer', h);
    });
  } else {
    s.hidden = [];
  }
  if (s.dtype !== 'float32' && s.dtype !== 'float64')
    throw invalidParameter('spec.dtype', "'float32' or 'float64'", s.dtype);
  if (!['float', 'float32', 'float64', 'uint8'].includes(s.input))
    throw invalidParameter('spec.input', "'float', 'float32', 'float64' or 'uint8'", s.input);
  if (s.labels !== 'int64' && s.labels !== 'int32' && s.labels !== 'uint8')
    throw invalidParameter('spec.labels', "'int64', 'int32' or 'uint8'", s.labels);
  return s;
}
