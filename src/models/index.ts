/** `trellis/models`: ONNX graphs built in code, the onnxruntime adapter, the gradient step, optimizers, the trainer and the inference pool. */
export {
  GradientStep,
  type GradientStepOptions,
  initFlatParams,
  type ParamLayout,
  paramLayout,
  paramTensors,
  paramViews,
} from './gradient-step.js';
export { InferencePool, type InferencePoolOptions } from './inference-pool.js';
export { effectiveBatchWarning, type LrSchedule, learningRate } from './lr-schedule.js';
export {
  type BuiltModel,
  type FullModelSpec,
  type GradientModel,
  gradientModel,
  inferenceModel,
  initParams,
  type ModelSpec,
  modelParams,
} from './models.js';
export {
  type AttrValue,
  type Dim,
  floatAttr,
  GraphBuilder,
  type GraphOptions,
  type TensorSpec,
} from './onnx-graph.js';
export { Optimizer, type OptimizerSpec, type OptimizerState } from './optimizer.js';
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
  type TrainDefaults,
  type TrainOptions,
  type TrainResult,
  trainDefaults,
  trainLocal,
} from './trainer.js';
