/**
 * What the scheduler reads about the data: where each shard lives and how
 * big it is, through a store client (the API's local store over its socket,
 * or any store over RPC; both answer locate() from the metadata service).
 */
import type { StoreClient } from '../client/store-client.js';
import type { InstanceInfo, ShardLocation } from '../protocol/records.js';

export interface ShardPlace {
  id: string;
  nbytes: number;
  /** The store instance holding it (-1 when lost). */
  instanceId: number;
  /** Every store instance holding a live copy of it (replicas included; empty when lost). */
  holders: number[];
}

function place(s: ShardLocation): ShardPlace {
  const holders = s.replicas.filter((c) => c.alive).map((c) => c.instanceId);
  return { id: s.id, nbytes: s.nbytes, instanceId: s.alive ? s.instanceId : -1, holders };
}

export class ClusterView {
  constructor(readonly client: StoreClient) {}

  /** The dataset's shards in dataset order (ERR_NAME_NOT_FOUND for an unknown name). */
  async shards(dataset: string): Promise<ShardPlace[]> {
    const loc = await this.client.locate(dataset);
    return loc.shards.map(place);
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
        out.set(id, s ? place(s) : { id, nbytes: 0, instanceId: -1, holders: [] });
      } catch {
        out.set(id, { id, nbytes: 0, instanceId: -1, holders: [] });
      }
    }
    return out;
  }

  instances(): Promise<InstanceInfo[]> {
    return this.client.instances();
  }
}
