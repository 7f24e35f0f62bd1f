/**
 * The one module that loads onnxruntime-node. It is loaded on first use, not
 * at import, so `import 'trellis'` (the store, the CLI) does not pay for the
 * runtime and its native library unless a model is used.
 */
import { createRequire } from 'node:module';
import type * as Ort from 'onnxruntime-node';

export type OrtModule = typeof Ort;
export type OrtTensor = Ort.Tensor;
export type OrtSession = Ort.InferenceSession;
export type OrtSessionOptions = Ort.InferenceSession.SessionOptions;

const require = createRequire(import.meta.url);
let loaded: OrtModule | undefined;

/** onnxruntime-node, loaded once per process (or worker thread). */
export function ort(): OrtModule {
  if (!loaded) loaded = require('onnxruntime-node') as OrtModule;
  return loaded;
}
