/** A real etcd for tests: the project's one starter (src/meta/etcd-server.ts), under the names the tests use. */
export {
  type EtcdServerHandle as EtcdHandle,
  startEtcdServer as startEtcd,
} from '../../dist/src/meta/etcd-server.js';
