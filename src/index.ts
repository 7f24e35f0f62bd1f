export { connect } from './client/connect.js';
export {
  TrellisClient,
  type BlobWriter,
  type ConnectOptions,
  type PutOptions,
  type PutValue,
  type StoreValue,
  type StoredObject,
  type TensorWriter,
} from './client/client.js';
export { TrellisError, ERROR_CODES, type ErrorCode, isTrellisError } from './errors.js';
export { type DType, DTYPES, type Tensor, type TypedArray, tensor } from './codecs/tensor.js';
export { StoreServer, type StoreOptions, type StoreStatus } from './store/store-server.js';
export { parseSize } from './cli/size.js';
