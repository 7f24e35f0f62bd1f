/** `trellis/collective`: allReduce and broadcast among the ranks of a job, through the stores. */
export type { GroupMember, GroupSpec } from './group-spec.js';
export {
  type Algorithm,
  type CollectiveOptions,
  type ExchangeTiming,
  StoreCollective,
} from './store-collective.js';
