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
export { DTYPES, type DType, type Tensor, type TypedArray, tensor } from './codecs/tensor.js';
export { ERROR_CODES, type ErrorCode, isTrellisError, TrellisError } from './errors.js';
export { type StoreOptions, StoreServer, type StoreStatus } from './store/store-server.js';
