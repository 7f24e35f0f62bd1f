/**
 * Tensors: a dtype, a row-major shape and a TypedArray of the elements.
 * float16 travels as raw half-precision bits in a Uint16Array; bool as one
 * byte per element in a Uint8Array; int64/uint64 as BigInt64Array/BigUint64Array.
 */
import { invalidParameter, TrellisError } from '../errors.js';
import type { ObjectRecord } from '../protocol/records.js';
import type { BlobResolver, EncodedValue } from './codec.js';

export type TypedArray =
  | Int8Array
  | Uint8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | Float32Array
  | Float64Array;

type TypedArrayCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): TypedArray;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
};

export const DTYPES = {
  bool: Uint8Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  float16: Uint16Array,
  float32: Float32Array,
  float64: Float64Array,
} as const satisfies Record<string, TypedArrayCtor>;

export type DType = keyof typeof DTYPES;

/** The TypedArray class that holds a dtype's elements. */
export type ArrayOf<D extends DType> = InstanceType<(typeof DTYPES)[D]>;

export interface Tensor<T extends TypedArray = TypedArray> {
  dtype: DType;
  shape: number[];
  data: T;
  /** Set on tensors that come from the store: the object id. */
  id?: string;
}

export const TENSOR_TYPENAME = 'Tensor';

export function isDType(v: unknown): v is DType {
  return typeof v === 'string' && Object.hasOwn(DTYPES, v);
}

/** The dtype a bare TypedArray is stored as. */
export function dtypeOf(a: TypedArray): DType {
  // instanceof, not the constructor: a Buffer is a Uint8Array too.
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return 'uint8';
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Uint16Array) return 'uint16';
  if (a instanceof Uint32Array) return 'uint32';
  if (a instanceof BigUint64Array) return 'uint64';
  throw invalidParameter('value', 'a TypedArray', a);
}

export function isTypedArray(v: unknown): v is TypedArray {
  return ArrayBuffer.isView(v) && !(v instanceof DataView);
}

export function isTensorLike(v: unknown): v is Tensor {
  return typeof v === 'object' && v !== null && 'dtype' in v && 'shape' in v && 'data' in v;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Checks dtype, shape and data agree; throws ERR_BAD_REQUEST or ERR_SIZE_MISMATCH. */
export function validateTensor(t: Tensor): void {
  if (!isDType(t.dtype)) throw invalidParameter('tensor.dtype', `one of ${Object.keys(DTYPES).join(', ')}`, t.dtype);
  if (!Array.isArray(t.shape) || t.shape.length > 32)
    throw invalidParameter('tensor.shape', 'an array of at most 32 dimensions', t.shape);
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw invalidParameter('tensor.shape[]', 'a non-negative integer', d);
  }
  const ctor = DTYPES[t.dtype];
  const okCtor = t.data instanceof ctor || (t.dtype === 'uint8' && t.data instanceof Uint8ClampedArray);
  if (!okCtor) throw invalidParameter('tensor.data', `a ${ctor.name} for dtype ${t.dtype}`, t.data);
  const n = elementCount(t.shape);
  if (t.data.length !== n) {
    throw new TrellisError(
      'ERR_SIZE_MISMATCH',
      `tensor of shape [${t.shape.join(', ')}] needs ${n} elements, data has ${t.data.length}`,
    );
  }
}

export function encodeTensor(t: Tensor): EncodedValue {
  validateTensor(t);
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return {
    typename: TENSOR_TYPENAME,
    meta: { dtype: t.dtype, shape: t.shape.slice() },
    size: bytes.byteLength,
    contiguous: bytes,
    write: (dst) => dst.set(bytes),
  };
}

export function tensorFromRecord(rec: ObjectRecord, resolve: BlobResolver): Tensor {
  const { dtype, shape } = rec.meta as { dtype: unknown; shape: unknown };
  if (!isDType(dtype) || !Array.isArray(shape))
    throw new TrellisError('ERR_PROTOCOL', `object ${rec.id} has bad tensor metadata`);
  const blob = rec.members[0];
  if (!blob) throw new TrellisError('ERR_PROTOCOL', `tensor ${rec.id} has no data blob`);
  const bytes = resolve(blob);
  const ctor = DTYPES[dtype] as TypedArrayCtor;
  const n = elementCount(shape as number[]);
  if (n * ctor.BYTES_PER_ELEMENT !== bytes.byteLength) {
    throw new TrellisError('ERR_SIZE_MISMATCH', `tensor ${rec.id}: ${bytes.byteLength} bytes for ${n} ${dtype}`);
  }
  return { dtype, shape: shape as number[], data: new ctor(bytes.buffer, bytes.byteOffset, n), id: rec.id };
}

/** Builds a tensor, checking shape against data; allocates zeroed data when none is given. */
export function tensor<D extends DType>(dtype: D, shape: number[], data?: InstanceType<(typeof DTYPES)[D]>): Tensor {
  const ctor = DTYPES[dtype] as unknown as new (n: number) => TypedArray;
  const t: Tensor = { dtype, shape, data: data ?? new ctor(elementCount(shape)) };
  validateTensor(t);
  return t;
}
