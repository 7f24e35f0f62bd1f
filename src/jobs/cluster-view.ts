/**
 * What the scheduler reads about the data: where each shard lives and how
 * big it is, through a store client (the API's local store over its socket,
 * or any store over RPC; both answer locate() from the metadata service).
 */
import type { StoreClient } from '../client/store-client.js';
import type { InstanceInfo } from '../protocol/records.js';

export interface ShardPlace {
  id: string;
  nbytes: number;
  /** The store instance holding it (-1 when lost). */
  instanceId: number;
}

export class ClusterView {
  constructor(readonly client: StoreClient) {}

  /** The dataset's shards in dataset order (ERR_NAME_NOT_FOUND for an unknown name). */
  async shards(dataset: string): Promise<ShardPlace[]> {
    const loc = await this.client.locate(dataset);
    return loc.shards.map((s) => ({ id: s.id, nbytes: s.nbytes, instanceId: s.alive ? s.instanceId : -1 }));
  }

  /** Where these shard ids live now: from one locate of the dataset, and per id for any it no longer has. */
  async places(dataset: string, ids: string[]): Promise<Map<string, ShardPlace>> {
    const out = new Map<string, ShardPlace>();
    try {
      for (const s of await this.shards(dataset)) out.set(s.id, s);
    } catch {
      // The name was dropped or rebound since submit: the ids below still say where the data is.
    }
    for (const id of ids) {
      if (out.has(id)) continue;
      try {
        const loc = await this.client.locate(id);
        const s = loc.shards[0];
        out.set(id, { id, nbytes: s?.nbytes ?? 0, instanceId: s?.alive ? s.instanceId : -1 });
      } catch {
        out.set(id, { id, nbytes: 0, instanceId: -1 });
      }
    }
    return out;
  }

  instances(): Promise<InstanceInfo[]> {
    return this.client.instances();
  }
}
