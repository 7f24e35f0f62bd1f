/**
 * A small typed builder for ONNX graphs, over onnx-proto (protobufjs classes
 * for onnx.proto). No .onnx file ships with any npm package, so Trellis builds
 * its models in code; the builder checks what onnxruntime would otherwise
 * reject with a less helpful message (unknown value names, duplicate names,
 * bad shapes) and encodes a ModelProto.
 *
 * Values are named by strings. `input`, `initializer` and `op` return the name
 * of the value they define, so a graph reads like the math:
 *
 * @example
 *   const g = new GraphBuilder('affine');
 *   const x = g.input('X', 'float32', ['B', 4]);
 *   const w = g.initializer('W', tensor('float32', [4, 2], new Float32Array(8)));
 *   const b = g.initializer('b', tensor('float32', [2], new Float32Array(2)));
 *   g.op('Gemm', [x, w, b], {}, 'Y');
 *   g.output('Y', 'float32', ['B', 2]);
 *   const bytes = g.build();   // Uint8Array: an ONNX ModelProto, opset 13
 */
import { createRequire } from 'node:module';
import type * as OnnxProto from 'onnx-proto';
import { DTYPES, type DType, isDType, type Tensor, validateTensor } from '../codecs/tensor.js';
import { invalidParameter, TrellisError } from '../errors.js';

type Onnx = typeof OnnxProto.onnx;

const require = createRequire(import.meta.url);
let onnxModule: Onnx | undefined;

/** The protobufjs classes for onnx.proto, loaded on first use. */
export function onnxProto(): Onnx {
  if (!onnxModule) onnxModule = (require('onnx-proto') as typeof OnnxProto).onnx;
  return onnxModule;
}

/** ONNX TensorProto.DataType of each store dtype. */
export const ONNX_ELEM_TYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  uint16: 4,
  int16: 5,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  uint32: 12,
  uint64: 13,
};

/** A dimension: a fixed size, a symbolic name shared across values (e.g. 'B'), or null for unknown. */
export type Dim = number | string | null;

/** A float attribute whose value happens to be whole (a plain number 1 would be encoded as an int). */
export interface FloatAttr {
  readonly float: number;
}

/**
 * An attribute value: a whole number is an INT, any other number a FLOAT
 * (use `floatAttr(1)` for a whole-valued float), a string a STRING, an array of
 * whole numbers INTS (otherwise FLOATS), a Tensor a TENSOR.
 */
export type AttrValue = number | FloatAttr | string | number[] | Tensor;

export function floatAttr(value: number): FloatAttr {
  return { float: value };
}

export interface GraphOptions {
  /** Default opset of the ai.onnx domain: 13. */
  opset?: number;
  /** ONNX IR version: 8 (the version onnx-proto 8 describes). */
  irVersion?: number;
  /** producer_name in the model. */
  producer?: string;
}

/** A graph input or output: name, dtype and shape (symbolic dimensions by name). */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: Dim[];
}

interface NodeSpec {
  opType: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  domain: string;
}

const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

export class GraphBuilder {
  private readonly inputs: TensorSpec[] = [];
  private readonly outputs: TensorSpec[] = [];
  private readonly initializers = new Map<string, Tensor>();
  private readonly nodes: NodeSpec[] = [];
  /** Every value defined so far: inputs, initializers, node outputs. */
  private readonly defined = new Set<string>();
  private counter = 0;

  constructor(
    readonly name: string,
    private readonly opts: GraphOptions = {},
  ) {
    if (typeof name !== 'string' || name.length === 0) throw invalidParameter('name', 'a non-empty string', name);
  }

  /** Declares a graph input and returns its name. */
  input(name: string, dtype: DType, shape: Dim[]): string {
    const spec = { name, dtype: checkDType(dtype), shape: checkShape(shape) };
    this.define(name);
    this.inputs.push(spec);
    return name;
  }

  /** Adds a constant tensor stored in the model (weights, axes, scalars) and returns its name. */
  initializer(name: string, value: Tensor): string {
    validateTensor(value);
    this.define(name);
    this.initializers.set(name, value);
    return name;
  }

  /** A constant with a generated name: a scalar (shape []) of `dtype`, or a 1-d tensor from an array. */
  constant(value: number | bigint | number[], dtype: DType = 'float32'): string {
    // float16 would need a conversion to half-precision bits; pass a Tensor to `initializer` instead.
    if (dtype === 'float16')
      throw new TrellisError('ERR_UNSUPPORTED', 'constant() takes no float16; use initializer()');
    const values = Array.isArray(value) ? value : [value];
    const shape = Array.isArray(value) ? [value.length] : [];
    const ctor = DTYPES[checkDType(dtype)] as unknown as new (
      n: number,
    ) => ArrayLike<number | bigint> & {
      [i: number]: number | bigint;
    };
    const data = new ctor(values.length);
    const big = dtype === 'int64' || dtype === 'uint64';
    values.forEach((v, i) => {
      data[i] = big ? BigInt(v) : Number(v);
    });
    return this.initializer(this.fresh('const'), { dtype, shape, data: data as unknown as Tensor['data'] });
  }

  /**
   * Adds a node with one output and returns the output's name (generated
   * unless `output` is given). Inputs must be defined already; pass '' for an
   * omitted optional input.
   */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, output?: string): string {
    return this.node(opType, inputs, { attrs, outputs: [output ?? this.fresh(opType)] })[0];
  }

  /** Adds a node with any number of outputs (names or a count of generated names); returns their names. */
  node(
    opType: string,
    inputs: string[],
    opts: { attrs?: Record<string, AttrValue>; outputs?: string[] | number; domain?: string } = {},
  ): string[] {
    if (typeof opType !== 'string' || opType.length === 0)
      throw invalidParameter('opType', 'a non-empty string', opType);
    if (!Array.isArray(inputs)) throw invalidParameter('inputs', 'an array of value names', inputs);
    for (const i of inputs) {
      if (typeof i !== 'string') throw invalidParameter(`${opType} input`, 'a value name', i);
      if (i !== '' && !this.defined.has(i)) {
        throw new TrellisError(
          'ERR_BAD_REQUEST',
          `${opType} reads '${i}', which no input, initializer or node defines`,
        );
      }
    }
    const outs = opts.outputs ?? 1;
    const outputs =
      typeof outs === 'number' ? Array.from({ length: outs }, () => this.fresh(opType)) : outs.map((o) => o);
    for (const o of outputs) this.define(o);
    this.nodes.push({
      opType,
      inputs: inputs.slice(),
      outputs,
      attrs: { ...(opts.attrs ?? {}) },
      domain: opts.domain ?? '',
    });
    return outputs;
  }

  /** Declares an already defined value as a graph output, with its dtype and shape. */
  output(name: string, dtype: DType, shape: Dim[]): void {
    if (!this.defined.has(name)) throw new TrellisError('ERR_BAD_REQUEST', `output '${name}' is not defined`);
    if (this.outputs.some((o) => o.name === name))
      throw new TrellisError('ERR_OBJECT_EXISTS', `'${name}' is already an output`);
    this.outputs.push({ name, dtype: checkDType(dtype), shape: checkShape(shape) });
  }

  /** The inputs declared so far, in order. */
  inputSpecs(): TensorSpec[] {
    return this.inputs.map((v) => ({ ...v, shape: v.shape.slice() }));
  }

  /** The outputs declared so far, in order. */
  outputSpecs(): TensorSpec[] {
    return this.outputs.map((v) => ({ ...v, shape: v.shape.slice() }));
  }

  /** The model as ModelProto bytes, ready for onnxruntime or `putModel`. */
  build(): Uint8Array {
    if (this.outputs.length === 0) throw new TrellisError('ERR_BAD_REQUEST', `graph ${this.name} has no outputs`);
    const onnx = onnxProto();
    const model = onnx.ModelProto.create({
      irVersion: this.opts.irVersion ?? 8,
      producerName: this.opts.producer ?? 'trellis',
      opsetImport: [{ domain: '', version: this.opts.opset ?? 13 }],
      graph: {
        name: this.name,
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
        initializer: [...this.initializers].map(([name, t]) => tensorProto(name, t)),
        node: this.nodes.map((n, i) => ({
          name: `${n.opType}_${i}`,
          opType: n.opType,
          domain: n.domain,
          input: n.inputs,
          output: n.outputs,
          attribute: Object.entries(n.attrs).map(([k, v]) => attribute(n.opType, k, v)),
        })),
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }

  private define(name: string): void {
    if (typeof name !== 'string' || name.length === 0) throw invalidParameter('value name', 'a non-empty string', name);
    if (this.defined.has(name)) throw new TrellisError('ERR_OBJECT_EXISTS', `graph value '${name}' is defined twice`);
    this.defined.add(name);
  }

  private fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.defined.has(name));
    return name;
  }
}

function checkDType(dtype: unknown): DType {
  if (!isDType(dtype)) throw invalidParameter('dtype', `one of ${Object.keys(DTYPES).join(', ')}`, dtype);
  return dtype;
}

function checkShape(shape: unknown): Dim[] {
  if (!Array.isArray(shape)) throw invalidParameter('shape', 'an array of dimensions', shape);
  for (const d of shape) {
    const ok =
      d === null ||
      (typeof d === 'string' && d.length > 0) ||
      (typeof d === 'number' && Number.isSafeInteger(d) && d >= 0);
    if (!ok) throw invalidParameter('shape[]', 'a non-negative integer, a dimension name or null', d);
  }
  return shape.slice();
}

function valueInfo(v: TensorSpec): OnnxProto.onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ONNX_ELEM_TYPE[v.dtype],
        shape: {
          dim: v.shape.map((d) => (d === null ? {} : typeof d === 'string' ? { dimParam: d } : { dimValue: d })),
        },
      },
    },
  };
}

function tensorProto(name: string, t: Tensor): OnnxProto.onnx.ITensorProto {
  // raw_data is little-endian, as TypedArrays are on every platform Node runs on here.
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return { name, dims: t.shape.slice(), dataType: ONNX_ELEM_TYPE[t.dtype], rawData: bytes };
}

function attribute(opType: string, name: string, v: AttrValue): OnnxProto.onnx.IAttributeProto {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw invalidParameter(`${opType}.${name}`, 'a finite number', v);
    return Number.isInteger(v) ? { name, type: ATTR.INT, i: v } : { name, type: ATTR.FLOAT, f: v };
  }
  if (typeof v === 'string') return { name, type: ATTR.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) {
    if (v.every((x) => Number.isInteger(x))) return { name, type: ATTR.INTS, ints: v.slice() };
    if (v.every((x) => Number.isFinite(x))) return { name, type: ATTR.FLOATS, floats: v.slice() };
    throw invalidParameter(`${opType}.${name}`, 'an array of finite numbers', v);
  }
  if (v && typeof v === 'object' && 'float' in v && typeof v.float === 'number') {
    return { name, type: ATTR.FLOAT, f: v.float };
  }
  if (v && typeof v === 'object' && 'dtype' in v) {
    validateTensor(v);
    return { name, type: ATTR.TENSOR, t: tensorProto('', v) };
  }
  throw invalidParameter(`${opType}.${name}`, 'a number, string, number[], floatAttr() or Tensor', v);
}
