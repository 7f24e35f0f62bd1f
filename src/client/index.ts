/**
 * `trellis/client`: what a reader or writer of objects needs and nothing
 * else — connect, the IPC and RPC clients, tensors and errors. It loads
 * neither the loaders nor apache-arrow (the Arrow codec loads on the first
 * table put or got) nor onnxruntime, so a fresh process imports it in a few
 * milliseconds; the package's main entry re-exports all of it.
 */

export { DTYPES, type DType, type Tensor, type TypedArray, tensor } from '../codecs/tensor.js';
export { ERROR_CODES, type ErrorCode, isTrellisError, TrellisError } from '../errors.js';
export {
  type BlobWriter,
  type ConnectOptions,
  type PutOptions,
  type PutValue,
  type StoredObject,
  type StoreValue,
  type TensorWriter,
  TrellisClient,
} from './client.js';
export { connect } from './connect.js';
export { RemoteClient, type RemoteConnectOptions } from './remote-client.js';
export type { StoreClient } from './store-client.js';
