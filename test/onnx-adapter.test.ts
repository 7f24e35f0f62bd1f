/**
 * The onnxruntime adapter over a real store: zero-copy inputs of every dtype,
 * outputs written into arena tensors, models stored as blobs, and every
 * failure path with its code.
 */

import { connect, DTYPES, type DType, type Tensor, type TrellisClient, tensor, xorshift32 } from 'trellis';
import {
  fromOrtTensor,
  GraphBuilder,
  inferenceModel,
  initParams,
  ModelSession,
  ORT_TYPE,
  putModel,
  toOrtTensor,
} from 'trellis/models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onnxProto } from '../dist/src/models/onnx-graph.js';
import { ort } from '../dist/src/models/ort.js';
import { native } from '../dist/src/native.js';
import { bytesOf } from './helpers/bytes.js';
import { startStore } from './helpers/store.js';

let env: Awaited<ReturnType<typeof startStore>>;
let client: TrellisClient;

beforeAll(async () => {
  env = await startStore();
  client = await connect({ socket: env.socket });
});
afterAll(async () => {
  await client?.close();
  await env?.stop();
});

/** Deterministic pseudo-random floats in [-1, 1). */
function noise(n: number, seed: number) {
  const next = xorshift32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = next() / 2 ** 31 - 1;
  return out;
}

/** A one-node graph: y = Identity(x) over a symbolic shape. */
function identityModel(dtype: DType): Uint8Array {
  const g = new GraphBuilder(`identity_${dtype}`);
  g.op('Identity', [g.input('x', dtype, ['n', 'm'])], {}, 'y');
  g.output('y', dtype, ['n', 'm']);
  return g.build();
}

const SAMPLE: Record<DType, () => Tensor['data']> = {
  bool: () => Uint8Array.from([1, 0, 1, 1, 0, 0]),
  int8: () => Int8Array.from([-128, -1, 0, 1, 2, 127]),
  int16: () => Int16Array.from([-32768, -2, 0, 3, 4, 32767]),
  int32: () => Int32Array.from([-(2 ** 31), -5, 0, 6, 7, 2 ** 31 - 1]),
  int64: () => BigInt64Array.from([-(2n ** 63n), -9n, 0n, 10n, 2n ** 40n, 2n ** 63n - 1n]),
  uint8: () => Uint8Array.from([0, 1, 2, 128, 254, 255]),
  uint16: () => Uint16Array.from([0, 1, 2, 40000, 65534, 65535]),
  uint32: () => Uint32Array.from([0, 1, 2, 3e9, 4e9, 2 ** 32 - 1]),
  uint64: () => BigUint64Array.from([0n, 1n, 2n, 2n ** 63n, 2n ** 64n - 2n, 2n ** 64n - 1n]),
  // half-precision bits: 1.0, -2.0, 0.5, 65504, +inf, a NaN
  float16: () => Uint16Array.from([0x3c00, 0xc000, 0x3800, 0x7bff, 0x7c00, 0x7e00]),
  float32: () => Float32Array.from([-1.5, 0, 1e-30, 3.25, Number.MAX_VALUE, Number.NaN]),
  float64: () => Float64Array.from([-1.5, 0, 1e-300, Math.PI, Number.MAX_VALUE, -0]),
};

/** onnx.proto's TensorProto.DataType for float32. */
const ORT_ELEM_FLOAT = 1;

describe('onnxruntime adapter', () => {
  it('runs a graph built in code over a store tensor without copying it', async () => {
    const spec = { kind: 'softmax', features: 784, classes: 10 } as const;
    const W = tensor('float32', [784, 10], noise(7840, 3));
    const b = tensor('float32', [10], noise(10, 4));
    const xId = await client.put(tensor('float32', [4, 784], noise(4 * 784, 5)));
    const x = (await client.get(xId)) as Tensor<Float32Array>;

    const ox = toOrtTensor(x);
    // Same TypedArray, same shared-memory mapping: the runtime reads the arena in place.
    expect(ox.data).toBe(x.data);
    const od = ox.data as Float32Array;
    expect(native.address(od.buffer as ArrayBuffer) + BigInt(od.byteOffset)).toBe(
      native.address(x.data.buffer as ArrayBuffer) + BigInt(x.data.byteOffset),
    );
    expect(ox.dims).toEqual([4, 784]);

    await using s = await ModelSession.fromBytes(inferenceModel(spec).bytes);
    const out = await s.run({ X: x, W, b });
    // The graph computes softmax(X W + b): check against plain JS in float64.
    const probs = out.probs.data as Float32Array;
    for (let r = 0; r < 4; r++) {
      const z = Array.from({ length: 10 }, (_, c) => {
        let acc = b.data[c] as number;
        for (let k = 0; k < 784; k++) acc += x.data[r * 784 + k] * (W.data[k * 10 + c] as number);
        return acc;
      });
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const sum = e.reduce((a, v) => a + v, 0);
      for (let c = 0; c < 10; c++) expect(probs[r * 10 + c]).toBeCloseTo(e[c] / sum, 5);
      expect(Number(out.pred.data[r])).toBe(z.indexOf(m));
    }
    await client.release(xId);
  });

  it('hands every dtype to onnxruntime without a copy and writes it back into the arena', async () => {
    for (const dtype of Object.keys(DTYPES) as DType[]) {
      const id = await client.put({ dtype, shape: [2, 3], data: SAMPLE[dtype]() });
      const t = (await client.get(id)) as Tensor;
      const o = toOrtTensor(t);
      expect(o.data, dtype).toBe(t.data);
      expect(o.type).toBe(ORT_TYPE[dtype]);
      const back = fromOrtTensor(o);
      expect(back.data).toBe(t.data);
      expect(back.dtype).toBe(dtype);

      await using s = await ModelSession.fromBytes(identityModel(dtype));
      const { y } = await s.runToStore(client, { x: t });
      const out = (await client.get(y)) as Tensor;
      expect(out.dtype).toBe(dtype);
      expect(out.shape).toEqual([2, 3]);
      expect(bytesOf(out)).toEqual(bytesOf(t));
      await client.release(y);
      await client.release(id);
      await client.delete([id, y]);
    }
  });

  it('writes outputs into arena tensors that equal a direct run byte for byte', async () => {
    const spec = { kind: 'mlp', hidden: 32 } as const;
    const weights = initParams(spec, 11);
    const modelId = await putModel(client, inferenceModel(spec, { weights }).bytes, { name: 'adapter/mlp' });
    await using s = await ModelSession.fromStore(client, 'adapter/mlp');
    expect(s.inputs.map((i) => [i.name, i.dtype, i.shape])).toEqual([['X', 'float32', ['B', 784]]]);
    expect(s.outputs.map((o) => [o.name, o.dtype, o.shape])).toEqual([
      ['probs', 'float32', ['B', 10]],
      ['pred', 'int64', ['B']],
    ]);
    const xId = await client.put(tensor('float32', [16, 784], noise(16 * 784, 9).map(Math.abs)));
    const x = (await client.get(xId)) as Tensor;

    const direct = await s.run({ X: x });
    const before = (await client.status()).objects;
    const ids = await s.runToStore(client, { X: x }, { names: { pred: 'adapter/pred' } });
    expect((await client.status()).objects).toBe(before + 2);
    expect(await client.getName('adapter/pred')).toBe(ids.pred);
    const [probs, pred] = (await client.getMany([ids.probs, ids.pred])) as Tensor[];
    expect(probs.shape).toEqual([16, 10]);
    expect(pred.dtype).toBe('int64');
    expect(bytesOf(probs)).toEqual(bytesOf(direct.probs));
    expect(bytesOf(pred)).toEqual(bytesOf(direct.pred));

    // Preallocated outputs in caller memory come out the same too.
    const into = { probs: tensor('float32', [16, 10]) };
    const viaInto = await s.run({ X: x }, into);
    expect(viaInto.probs).toBe(into.probs);
    expect(bytesOf(into.probs)).toEqual(bytesOf(direct.probs));

    // A store view is read-only: refused as a destination instead of crashing the process.
    const roId = await client.put(tensor('float32', [16, 10]));
    const ro = (await client.get(roId)) as Tensor;
    await expect(s.run({ X: x }, { probs: ro })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
      message: expect.stringMatching(/read-only store view/),
    });
    await client.release(roId);
    await client.delete(roId);

    // And the same model by id.
    await using byId = await ModelSession.fromStore(client, modelId);
    expect(bytesOf((await byId.run({ X: x })).probs)).toEqual(bytesOf(direct.probs));
    for (const id of [xId, ids.probs, ids.pred]) await client.release(id);
    await client.delete([xId, ids.probs, ids.pred]);
  });

  it('checks inputs before onnxruntime sees them', async () => {
    const spec = { kind: 'softmax', features: 6, classes: 3 } as const;
    await using s = await ModelSession.fromBytes(inferenceModel(spec).bytes);
    const X = tensor('float32', [2, 6]);
    const W = tensor('float32', [6, 3]);
    const b = tensor('float32', [3]);
    await expect(s.run({ X, W })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
      message: expect.stringMatching(/input b is missing/),
    });
    await expect(s.run({ X, W, b, bias: b })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
      message: expect.stringMatching(/no input bias/),
    });
    await expect(s.run({ X: tensor('float64', [2, 6]), W, b })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
      message: expect.stringMatching(/inputs\.X\.dtype to be float32/),
    });
    await expect(s.run({ X: tensor('float32', [2, 7]), W, b })).rejects.toMatchObject({ code: 'ERR_SIZE_MISMATCH' });
    await expect(s.run({ X: tensor('float32', [12]), W, b })).rejects.toMatchObject({ code: 'ERR_SIZE_MISMATCH' });
    await expect(
      s.run({ X: { dtype: 'float32', shape: [2, 6], data: new Float32Array(11) }, W, b }),
    ).rejects.toMatchObject({ code: 'ERR_SIZE_MISMATCH' });
    await expect(s.run({ X: 'o0000000000000001' as unknown as Tensor, W, b })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
    });
    await expect(s.run({ X, W, b }, { probs: tensor('float32', [3, 3]) })).rejects.toMatchObject({
      code: 'ERR_SIZE_MISMATCH',
    });
    await expect(s.run({ X, W, b }, { logits: tensor('float32', [2, 3]) })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
    });
    await expect(s.runToStore(client, { X, W, b }, { names: { nope: 'x' } })).rejects.toMatchObject({
      code: 'ERR_BAD_REQUEST',
    });
    expect(() =>
      toOrtTensor({ dtype: 'complex64', shape: [1], data: new Float32Array(2) } as unknown as Tensor),
    ).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));

    // A symbolic dimension must agree across inputs.
    const g = new GraphBuilder('add');
    g.op('Add', [g.input('a', 'float32', ['B']), g.input('c', 'float32', ['B'])], {}, 'y');
    g.output('y', 'float32', ['B']);
    await using add = await ModelSession.fromBytes(g.build());
    await expect(add.run({ a: tensor('float32', [3]), c: tensor('float32', [4]) })).rejects.toMatchObject({
      code: 'ERR_SIZE_MISMATCH',
      message: expect.stringMatching(/B = 4 where another input has B = 3/),
    });

    await s.close();
    await s.close();
    await expect(s.run({ X, W, b })).rejects.toMatchObject({ code: 'ERR_CLOSED' });
  });

  it('reports runtime failures as ERR_INFERENCE_FAILED and leaves nothing allocated', async () => {
    // Reshape to [3] checks out against the declared inputs but fails inside onnxruntime for 4 elements.
    const g = new GraphBuilder('bad_reshape');
    g.op('Reshape', [g.input('x', 'float32', ['n']), g.constant([3], 'int64')], {}, 'y');
    g.output('y', 'float32', [3]);
    await using s = await ModelSession.fromBytes(g.build());
    const x = tensor('float32', [4]);
    await expect(s.run({ x })).rejects.toMatchObject({ code: 'ERR_INFERENCE_FAILED' });
    const before = await client.status();
    await expect(s.runToStore(client, { x })).rejects.toMatchObject({ code: 'ERR_INFERENCE_FAILED' });
    const after = await client.status();
    expect(after.blobs).toBe(before.blobs);
    expect(after.memoryUsed).toBe(before.memoryUsed);
  });

  it('keeps models in the store and refuses what is not a model', async () => {
    await expect(putModel(client, new Uint8Array([1, 2, 3, 4, 5]))).rejects.toMatchObject({
      code: 'ERR_MODEL_INVALID',
    });
    await expect(putModel(client, new Uint8Array(0))).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    // Bytes that decode as protobuf but are no model onnxruntime can load.
    const junk = await client.putBlob(
      onnxProto()
        .ModelProto.encode({
          irVersion: 8,
          opsetImport: [{ domain: '', version: 13 }],
          graph: {
            name: 'g',
            node: [{ opType: 'NoSuchOp', input: ['x'], output: ['y'] }],
            input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 1 }] } } } }],
            output: [{ name: 'y', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 1 }] } } } }],
          },
        })
        .finish(),
    );
    await expect(ModelSession.fromStore(client, junk)).rejects.toMatchObject({ code: 'ERR_MODEL_INVALID' });
    await expect(ModelSession.fromStore(client, 'no/such/model')).rejects.toMatchObject({ code: 'ERR_NAME_NOT_FOUND' });
    const notBlob = await client.put(new Float32Array(4));
    await expect(ModelSession.fromStore(client, notBlob)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    expect(client.heldCount).toBe(0);

    // A model whose output has no store dtype (string) is refused when the session is made.
    const onnx = onnxProto();
    const strModel = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: {
        name: 'cast_to_string',
        node: [{ opType: 'Cast', input: ['x'], output: ['y'], attribute: [{ name: 'to', type: 2, i: 8 }] }],
        input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 2 }] } } } }],
        output: [{ name: 'y', type: { tensorType: { elemType: 8, shape: { dim: [{ dimValue: 2 }] } } } }],
      },
    }).finish();
    await expect(ModelSession.fromBytes(strModel)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED' });
    const strTensor = new (ort().Tensor)('string', ['a', 'b'], [2]);
    expect(() => fromOrtTensor(strTensor)).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));

    // An output whose size the inputs do not determine cannot be preallocated.
    const g = new GraphBuilder('nonzero');
    g.op('NonZero', [g.input('x', 'float32', [4])], {}, 'idx');
    g.output('idx', 'int64', [1, 'k']);
    await using nz = await ModelSession.fromBytes(g.build());
    const x = tensor('float32', [4], Float32Array.from([0, 2, 0, 3]));
    expect(Array.from((await nz.run({ x })).idx.data as BigInt64Array)).toEqual([1n, 3n]);
    await expect(nz.runToStore(client, { x })).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED' });
  });

  it('builds graphs only from defined values, into a model that decodes and runs as built', async () => {
    const g = new GraphBuilder('g');
    const x = g.input('x', 'float32', [2]);
    expect(() => g.op('Relu', ['y'])).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => g.input('x', 'float32', [2])).toThrow(expect.objectContaining({ code: 'ERR_OBJECT_EXISTS' }));
    expect(() => g.input('z', 'complex64' as DType, [2])).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => g.input('z', 'float32', [-1])).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => g.output('nope', 'float32', [2])).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => g.build()).toThrow(
      expect.objectContaining({ code: 'ERR_BAD_REQUEST', message: expect.stringMatching(/no outputs/) }),
    );
    g.op('Relu', [x], {}, 'y');
    g.output('y', 'float32', [2]);
    expect(() => g.output('y', 'float32', [2])).toThrow(expect.objectContaining({ code: 'ERR_OBJECT_EXISTS' }));
    const bytes = g.build();
    const model = onnxProto().ModelProto.decode(bytes);
    type ValueInfo = NonNullable<NonNullable<typeof model.graph>['input']>[number];
    const dims = (v: ValueInfo) => v.type?.tensorType?.shape?.dim?.map((d) => Number(d.dimValue));
    expect({
      nodes: model.graph?.node?.map((n) => ({ op: n.opType, input: n.input, output: n.output })),
      inputs: model.graph?.input?.map((v) => [v.name, v.type?.tensorType?.elemType, dims(v)]),
      outputs: model.graph?.output?.map((v) => [v.name, v.type?.tensorType?.elemType, dims(v)]),
    }).toEqual({
      nodes: [{ op: 'Relu', input: ['x'], output: ['y'] }],
      inputs: [['x', ORT_ELEM_FLOAT, [2]]],
      outputs: [['y', ORT_ELEM_FLOAT, [2]]],
    });
    // and onnxruntime computes relu with it
    await using session = await ModelSession.fromBytes(bytes);
    const { y } = await session.run({ x: tensor('float32', [2], Float32Array.from([-1.5, 2.5])) });
    expect({ shape: y.shape, data: Array.from(y.data as Float32Array) }).toEqual({ shape: [2], data: [0, 2.5] });
  });
});
