/**
 * `trellis`: the client (IPC zero-copy, RPC copying), codecs, loaders and
 * errors. It loads neither onnxruntime (`trellis/models`) nor the store
 * daemon (`trellis/store`).
 */
export { parseSize } from './cli/size.js';
export {
  type BlobWriter,
  type ConnectOptions,
  type PutOptions,
  type PutValue,
  type StoredObject,
  type StoreValue,
  type TensorWriter,
  TrellisClient,
} from './client/client.js';
export { connect } from './client/connect.js';
export { RemoteClient, type RemoteConnectOptions } from './client/remote-client.js';
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
export type { MetaService } from './meta/meta-service.js';
export { findLogLine, type LogLine } from './observe/log-lines.js';
export { type LogFn, type Logger, silentLogger } from './observe/logger.js';
export type {
  GlobalObject,
  GlobalObjectInfo,
  InstanceInfo,
  Locations,
  ObjectSummary,
  RpcEndpoint,
  StoreStatus,
} from './protocol/records.js';
export { xorshift32, xorshift32Unit } from './random.js';
