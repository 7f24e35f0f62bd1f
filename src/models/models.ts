/**
 * Classifiers built in code as ONNX graphs: softmax (multinomial logistic)
 * regression and a one-hidden-layer MLP with ReLU, each as an inference graph
 * and as a training-step graph — forward pass, mean cross-entropy loss,
 * backward pass written out by hand from ONNX ops, and one SGD update — so a
 * whole step is one `run` and the weights stay tensors end to end (in the
 * store, they never leave shared memory).
 *
 * Conventions (every graph):
 * - `X`: [B, features], float (the model's dtype) with pixels already in
 *   [0, 1]; or, with `input: 'uint8'`, raw bytes that the graph scales by 1/255.
 * - `labels`: [B] class indices, int64 by default (`labels: 'int32' | 'uint8'`
 *   takes those as they are stored, e.g. Fashion-MNIST's uint8 labels).
 * - `lr`: the learning rate, a scalar (shape []) of the model's dtype.
 * - Parameters: softmax `W` [features, classes], `b` [classes]; MLP `W1`
 *   [features, hidden], `b1` [hidden], `W2` [hidden, classes], `b2` [classes].
 * - Training step outputs: `loss` (scalar, the batch's mean cross-entropy,
 *   computed with the weights before the update) and `<param>_new` for every
 *   parameter (`step.updates` maps each parameter to its output).
 * - Inference outputs: `probs` [B, classes] (softmax) and `pred` [B] int64 (argmax).
 *
 * @example
 *   const spec = { kind: 'mlp', hidden: 128 } as const;
 *   const step = trainingStepModel(spec);          // step.bytes: ModelProto
 *   let params = initParams(spec, 42);             // { W1, b1, W2, b2 } as Tensors
 *   const s = await ModelSession.fromBytes(step.bytes);
 *   const out = await s.run({ X, labels, lr: tensor('float32', [], new Float32Array([0.1])), ...params });
 *   params = Object.fromEntries(step.params.map((p) => [p, out[step.updates[p]]]));
 */
import { type DType, type Tensor, tensor } from '../codecs/tensor.js';
import { invalidParameter } from '../errors.js';
import { GraphBuilder, ONNX_ELEM_TYPE, type TensorSpec } from './onnx-graph.js';

export interface ModelSpec {
  kind: 'softmax' | 'mlp';
  /** Input features per sample (784 for 28x28 images). */
  features?: number;
  /** Number of classes (10). */
  classes?: number;
  /** Hidden units of the MLP (128); ignored for softmax. */
  hidden?: number;
  /** dtype of X (unless uint8), the weights and all the math: float32 (default) or float64. */
  dtype?: 'float32' | 'float64';
  /** X as floats already in [0, 1] ('float', default) or as uint8 pixels scaled by 1/255 in the graph. */
  input?: 'float' | 'uint8';
  /** dtype of the labels input (int64 default). */
  labels?: 'int64' | 'int32' | 'uint8';
}

type FullSpec = Required<ModelSpec>;

/** A model built in code: its ModelProto bytes and its declared inputs and outputs. */
export interface BuiltModel {
  bytes: Uint8Array;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

/** A training-step model: which inputs are parameters and which output holds each one's new value. */
export interface TrainingStepModel extends BuiltModel {
  params: string[];
  updates: Record<string, string>;
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
  return [
    { name: 'W1', shape: [s.features, s.hidden] },
    { name: 'b1', shape: [s.hidden] },
    { name: 'W2', shape: [s.hidden, s.classes] },
    { name: 'b2', shape: [s.classes] },
  ];
}

/**
 * Initial parameters, deterministic for a seed: softmax regression starts at
 * zero (its loss is convex); the MLP's weights are uniform with He scaling for
 * the ReLU layer and Glorot scaling for the output layer, biases zero.
 */
export function initParams(spec: ModelSpec, seed = 1): Record<string, Tensor> {
  const s = fullSpec(spec);
  const rand = mulberry32(seed);
  const out: Record<string, Tensor> = {};
  for (const p of modelParams(s)) {
    const t = tensor(s.dtype, p.shape);
    if (p.shape.length === 2 && s.kind === 'mlp') {
      const [fanIn, fanOut] = p.shape;
      const a = p.name === 'W1' ? Math.sqrt(6 / fanIn) : Math.sqrt(6 / (fanIn + fanOut));
      const d = t.data as Float32Array | Float64Array;
      for (let i = 0; i < d.length; i++) d[i] = (rand() * 2 - 1) * a;
    }
    out[p.name] = t;
  }
  return out;
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

/** The training-step graph: X, labels, lr and the parameters → loss and the updated parameters. */
export function trainingStepModel(spec: ModelSpec): TrainingStepModel {
  const s = fullSpec(spec);
  const g = new GraphBuilder(`${s.kind}_training_step`);
  const X = g.input('X', xDType(s), ['B', s.features]);
  const labels = g.input('labels', s.labels, ['B']);
  const lr = g.input('lr', s.dtype, []);
  const params: Record<string, string> = {};
  for (const p of modelParams(s)) params[p.name] = g.input(p.name, s.dtype, p.shape);
  const f = forward(g, s, X, params);
  const to = ONNX_ELEM_TYPE[s.dtype];

  // Loss: mean over the batch of -log softmax(logits)[label].
  const logp = g.op('LogSoftmax', [f.logits], { axis: 1 });
  const idx = s.labels === 'int64' ? labels : g.op('Cast', [labels], { to: ONNX_ELEM_TYPE.int64 });
  const classes = g.constant(
    Array.from({ length: s.classes }, (_, i) => i),
    'int64',
  );
  const onehot = g.op('Cast', [g.op('Equal', [g.op('Unsqueeze', [idx, g.constant([1], 'int64')]), classes])], { to });
  const picked = g.op('ReduceSum', [g.op('Mul', [onehot, logp]), g.constant([1], 'int64')], { keepdims: 0 });
  g.op('ReduceMean', [g.op('Neg', [picked])], { keepdims: 0 }, 'loss');

  // d loss / d logits = (softmax - onehot) / B.
  const batch = g.op('Cast', [g.op('Gather', [g.op('Shape', [X]), g.constant(0n, 'int64')], { axis: 0 })], { to });
  const dLogits = g.op('Div', [g.op('Sub', [g.op('Exp', [logp]), onehot]), batch]);
  const axis0 = g.constant([0], 'int64');
  const colSum = (v: string) => g.op('ReduceSum', [v, axis0], { keepdims: 0 });

  const grads: Record<string, string> = {};
  if (s.kind === 'softmax') {
    grads.W = g.op('Gemm', [f.x, dLogits], { transA: 1 });
    grads.b = colSum(dLogits);
  } else {
    grads.W2 = g.op('Gemm', [f.h!, dLogits], { transA: 1 });
    grads.b2 = colSum(dLogits);
    const dH = g.op('Gemm', [dLogits, params.W2], { transB: 1 });
    // ReLU passes the gradient where its input was positive.
    const mask = g.op('Cast', [g.op('Greater', [f.z1!, g.constant(0, s.dtype)])], { to });
    const dZ1 = g.op('Mul', [dH, mask]);
    grads.W1 = g.op('Gemm', [f.x, dZ1], { transA: 1 });
    grads.b1 = colSum(dZ1);
  }

  const updates: Record<string, string> = {};
  for (const p of modelParams(s)) {
    updates[p.name] = g.op('Sub', [params[p.name], g.op('Mul', [lr, grads[p.name]])], {}, `${p.name}_new`);
  }
  g.output('loss', s.dtype, []);
  for (const p of modelParams(s)) g.output(updates[p.name], s.dtype, p.shape);
  return {
    bytes: g.build(),
    inputs: g.inputSpecs(),
    outputs: g.outputSpecs(),
    params: modelParams(s).map((p) => p.name),
    updates,
  };
}

/** Forward pass up to the logits; also the values the backward pass needs. */
function forward(
  g: GraphBuilder,
  s: FullSpec,
  X: string,
  p: Record<string, string>,
): { x: string; logits: string; z1?: string; h?: string } {
  const x =
    s.input === 'uint8'
      ? g.op('Mul', [g.op('Cast', [X], { to: ONNX_ELEM_TYPE[s.dtype] }), g.constant(1 / 255, s.dtype)])
      : X;
  if (s.kind === 'softmax') return { x, logits: g.op('Gemm', [x, p.W, p.b]) };
  const z1 = g.op('Gemm', [x, p.W1, p.b1]);
  const h = g.op('Relu', [z1]);
  return { x, z1, h, logits: g.op('Gemm', [h, p.W2, p.b2]) };
}

function xDType(s: FullSpec): DType {
  return s.input === 'uint8' ? 'uint8' : s.dtype;
}

function fullSpec(spec: ModelSpec): FullSpec {
  if (!spec || (spec.kind !== 'softmax' && spec.kind !== 'mlp'))
    throw invalidParameter('spec.kind', "'softmax' or 'mlp'", spec?.kind);
  const s: FullSpec = {
    kind: spec.kind,
    features: spec.features ?? 784,
    classes: spec.classes ?? 10,
    hidden: spec.hidden ?? 128,
    dtype: spec.dtype ?? 'float32',
    input: spec.input ?? 'float',
    labels: spec.labels ?? 'int64',
  };
  for (const k of s.kind === 'mlp'
    ? (['features', 'classes', 'hidden'] as const)
    : (['features', 'classes'] as const)) {
    if (!Number.isSafeInteger(s[k]) || s[k] < 1) throw invalidParameter(`spec.${k}`, 'a positive integer', s[k]);
  }
  if (s.dtype !== 'float32' && s.dtype !== 'float64')
    throw invalidParameter('spec.dtype', "'float32' or 'float64'", s.dtype);
  if (s.input !== 'float' && s.input !== 'uint8') throw invalidParameter('spec.input', "'float' or 'uint8'", s.input);
  if (s.labels !== 'int64' && s.labels !== 'int32' && s.labels !== 'uint8')
    throw invalidParameter('spec.labels', "'int64', 'int32' or 'uint8'", s.labels);
  return s;
}

/** A small seeded PRNG (mulberry32): uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
