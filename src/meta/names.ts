/**
 * Names: a string bound to one object id. A reader may wait for a name that
 * does not exist yet; the waiter is woken when the name is put, or answered
 * with ERR_TIMEOUT when its time runs out, or dropped when its connection
 * closes.
 */
import { TrellisError } from '../errors.js';
import { nameListing } from '../protocol/records.js';

interface Waiter {
  resolve: (id: string) => void;
  reject: (e: TrellisError) => void;
  timer: NodeJS.Timeout | null;
  owner: number;
}

export class NameTable {
  private readonly names = new Map<string, string>();
  private readonly waiters = new Map<string, Set<Waiter>>();

  get size(): number {
    return this.names.size;
  }

  get waiting(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }

  get(name: string): string | undefined {
    return this.names.get(name);
  }

  put(name: string, id: string, overwrite: boolean): string | undefined {
    const prev = this.names.get(name);
    if (prev !== undefined && !overwrite && prev !== id) {
      throw new TrellisError('ERR_OBJECT_EXISTS', `name ${JSON.stringify(name)} is bound to ${prev}`);
    }
    this.names.set(name, id);
    const ws = this.waiters.get(name);
    if (ws) {
      this.waiters.delete(name);
      for (const w of ws) {
        if (w.timer) clearTimeout(w.timer);
        w.resolve(id);
      }
    }
    return prev;
  }

  drop(name: string): string {
    const id = this.names.get(name);
    if (id === undefined) throw new TrellisError('ERR_NAME_NOT_FOUND', `no object is named ${JSON.stringify(name)}`);
    this.names.delete(name);
    return id;
  }

  /** Removes names without error (their object was deleted). */
  forget(names: Iterable<string>): void {
    for (const n of names) this.names.delete(n);
  }

  list(prefix: string): Record<string, string> {
    const found: [string, string][] = [];
    for (const [n, id] of this.names) if (n.startsWith(prefix)) found.push([n, id]);
    return nameListing(found);
  }

  /** Resolves with the id once the name exists; timeoutMs 0 waits until the connection closes. */
  wait(name: string, timeoutMs: number, owner: number): Promise<string> {
    const id = this.names.get(name);
    if (id !== undefined) return Promise.resolve(id);
    return new Promise((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: null, owner };
      let set = this.waiters.get(name);
      if (!set) {
        set = new Set();
        this.waiters.set(name, set);
      }
      set.add(w);
      if (timeoutMs > 0) {
        w.timer = setTimeout(() => {
          this.removeWaiter(name, w);
          reject(new TrellisError('ERR_TIMEOUT', `name ${JSON.stringify(name)} did not appear within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /** Cancels every waiter of a connection (it closed) or of all (shutdown). */
  cancelWaiters(owner: number | null, error: TrellisError): void {
    for (const [name, set] of this.waiters) {
      for (const w of set) {
        if (owner !== null && w.owner !== owner) continue;
        this.removeWaiter(name, w);
        w.reject(error);
      }
    }
  }

  /** Fails every waiter whose name `match` accepts (what it waits for will never come). */
  rejectWhere(match: (name: string) => boolean, error: TrellisError): void {
    for (const [name, set] of this.waiters) {
      if (!match(name)) continue;
      for (const w of set) {
        this.removeWaiter(name, w);
        w.reject(error);
      }
    }
  }

  private removeWaiter(name: string, w: Waiter): void {
    if (w.timer) clearTimeout(w.timer);
    const set = this.waiters.get(name);
    set?.delete(w);
    if (set && set.size === 0) this.waiters.delete(name);
  }
}
