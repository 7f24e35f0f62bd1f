/** `trellis/store`: the store daemon, its RPC server and migration. */

export type { InstanceShare, Locations, ShardLocation, StoreStatus } from '../protocol/records.js';
export { type MigrateOptions, type MigrationStats, migrateFrom, migratorOf } from './migrate.js';
export { RpcServer, type RpcServerOptions, type RpcStats, startRpc } from './rpc-server.js';
export { type StoreOptions, StoreServer } from './store-server.js';
