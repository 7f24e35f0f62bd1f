/**
 * `trellis`: the client (IPC zero-copy, RPC copying), codecs, loaders and
 * errors. It loads neither onnxruntime (`trellis/models`) nor the store
 * daemon (`trellis/store`); `trellis/client` is the client alone, without
 * the loaders and apache-arrow.
 */
export { parseSize } from './cli/size.js';
// Everything of trellis/client (connect, the clients, tensors, errors).
export * from './client/index.js';
export { copyOn, servingCopy } from './client/shard-copies.js';
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
  LiveCopy,
  Locations,
  ObjectSummary,
  RepairStatus,
  ReplicaCopy,
  ReplicaSet,
  RpcEndpoint,
  ShardLocation,
  StoreStatus,
} from './protocol/records.js';
export { xorshift32, xorshift32Unit } from './random.js';
