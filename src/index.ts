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
export type { StoreClient } from './client/store-client.js';
export { DTYPES, type DType, type Tensor, type TypedArray, tensor } from './codecs/tensor.js';
export { ERROR_CODES, type ErrorCode, isTrellisError, TrellisError } from './errors.js';
export { type MigrateOptions, type MigrationStats, migrateFrom, migratorOf } from './rpc/migrate.js';
export { RemoteClient, type RemoteConnectOptions } from './rpc/remote-client.js';
export { RpcServer, type RpcServerOptions, type RpcStats, startRpc } from './rpc/rpc-server.js';
export { type StoreOptions, StoreServer, type StoreStatus } from './store/store-server.js';
