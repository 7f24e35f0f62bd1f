export { parseSize } from './cli/size.js';
export {
  type BlobWriter,
  type ConnectOptions,
  type GlobalObjectInfo,
  type PutOptions,
  type PutValue,
  type StoredObject,
  type StoreValue,
  type TensorWriter,
  TrellisClient,
} from './client/client.js';
export { connect } from './client/connect.js';
export type { StoreClient } from './client/store-client.js';
export { DTYPES, type DType, type Tensor, type TypedArray, tensor } from './codecs/tensor.js';
export { ERROR_CODES, type ErrorCode, isTrellisError, TrellisError } from './errors.js';
export {
  type ArrowTensorOptions,
  arrowColumnTensor,
  arrowColumnValidity,
  arrowTensor,
  arrowValidity,
  dtypeOfArrow,
  type Validity,
} from './loaders/arrow-adapter.js';
export { type Batch, DatasetLoader, type LoaderOptions, openLoader } from './loaders/dataset-loader.js';
export { InferencePool, type InferencePoolOptions } from './loaders/inference-pool.js';
export {
  type BuiltModel,
  inferenceModel,
  initParams,
  type ModelSpec,
  modelParams,
  type TrainingStepModel,
  trainingStepModel,
} from './loaders/models.js';
export {
  type AttrValue,
  type Dim,
  floatAttr,
  GraphBuilder,
  type GraphOptions,
  type TensorSpec,
} from './loaders/onnx-graph.js';
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
} from './loaders/ort-adapter.js';
export { epochOrder } from './loaders/sampler.js';
export { SHARD_TYPENAME, type ShardPart, shardParts } from './loaders/shard.js';
export {
  createShard,
  type ShardFormat,
  type ShardSpec,
  type ShardWriter,
  shardTable,
  type WriteDatasetInput,
  type WrittenDataset,
  writeArrowShard,
  writeDataset,
  writeShard,
} from './loaders/shard-writer.js';
export { type EpochReport, evaluate, type TrainOptions, type TrainResult, trainLocal } from './loaders/trainer.js';
export type { GlobalObject, InstanceInfo, MetaService, RpcEndpoint } from './meta/meta-service.js';
export { type MigrateOptions, type MigrationStats, migrateFrom, migratorOf } from './rpc/migrate.js';
export { RemoteClient, type RemoteConnectOptions } from './rpc/remote-client.js';
export { RpcServer, type RpcServerOptions, type RpcStats, startRpc } from './rpc/rpc-server.js';
export type { InstanceShare, Locations, ShardLocation } from './store/cluster.js';
export { type StoreOptions, StoreServer, type StoreStatus } from './store/store-server.js';
