/** `trellis/models`: ONNX graphs built in code, the onnxruntime adapter, the trainer and the inference pool. */
export { InferencePool, type InferencePoolOptions } from './inference-pool.js';
export {
  type BuiltModel,
  inferenceModel,
  initParams,
  type ModelSpec,
  modelParams,
  type TrainingStepModel,
  trainingStepModel,
} from './models.js';
export {
  type AttrValue,
  type Dim,
  floatAttr,
  GraphBuilder,
  type GraphOptions,
  type TensorSpec,
} from './onnx-graph.js';
export {
  dtypeOfOrt,
  fromOrtTensor,
  ModelSession,
  type ModelSessionOptions,
  type ModelStoreClient,
  type ModelValue,
  ORT_TYPE,
  putModel,
  type RunToStoreOptions,
  toOrtTensor,
} from './ort-adapter.js';
export {
  type EpochReport,
  evaluate,
  type StepReport,
  type TrainOptions,
  type TrainResult,
  trainLocal,
} from './trainer.js';
