/**
 * Tags: names that live in one store only, for exchanges in which readers on
 * other nodes wait for an object that does not exist yet (a rank's gradients
 * of step s). A name goes to the metadata service, and etcd does about 600
 * fsync'd puts a second, while a training step needs several per rank; a tag
 * costs a map entry.
 *
 * A tag is owned by the connection that bound it when it sealed the object:
 * when that connection closes (or its process dies), its tagged objects are
 * deleted, so a crashed producer leaves nothing behind. A tag may also carry
 * a number of reads: after that many complete RPC reads the object is
 * deleted (an exchange knows how many peers read each piece, so it never
 * has to come back to free it).
 *
 * Scopes. What comes before a tag's last '#' is its scope (a collective's
 * `group/rank`). The first connection that binds a tag in a scope owns it;
 * a connection may also claim a scope before it tags anything (claimScope);
when that connection closes, or ends the scope itself (endScope), the scope
 * is over: reads waiting for its tags fail at once with
 * ERR_COLLECTIVE_ABORTED instead of waiting out their timeout, and so do
 * later reads and binds in it. A peer that dies is noticed in milliseconds.
 */
import { TrellisError } from '../errors.js';
import { NameTable } from '../meta/names.js';

/** Ended scopes remembered, oldest forgotten first (a group name is unique per job attempt). */
const ENDED_KEPT = 10_000;

/** The scope of a tag: what comes before its last '#', or '' (no scope). */
export function scopeOf(tag: string): string {
  const i = tag.lastIndexOf('#');
  return i < 0 ? '' : tag.slice(0, i);
}

interface Tag {
  id: string;
  owner: number;
  /** Reads left before the object goes; 0: no limit. */
  readsLeft: number;
}

export class TagTable {
  /** tag → id, and the waits for tags not bound yet. */
  private readonly names = new NameTable();
  private readonly tags = new Map<string, Tag>();
  private readonly byOwner = new Map<number, Set<string>>();
  private readonly byId = new Map<string, string>();
  /** Scope → the connection that owns it. */
  private readonly scopes = new Map<string, number>();
  private readonly ended = new Set<string>();

  get size(): number {
    return this.tags.size;
  }

  get waiting(): number {
    return this.names.waiting;
  }

  /** ERR_OBJECT_EXISTS when `tag` is bound. */
  private checkFree(tag: string): void {
    const t = this.tags.get(tag);
    if (t) throw new TrellisError('ERR_OBJECT_EXISTS', `tag ${JSON.stringify(tag)} is bound to ${t.id}`);
  }

  /** Whether `owner` may bind `tag` now; checked before the seal that would bind it, so a refusal changes nothing. */
  checkBind(tag: string, owner: number): void {
    this.checkFree(tag);
    const scope = scopeOf(tag);
    if (scope === '') return;
    if (this.ended.has(scope)) throw this.over(scope);
    const o = this.scopes.get(scope);
    if (o !== undefined && o !== owner) {
      throw new TrellisError('ERR_NOT_OWNER', `tag scope ${JSON.stringify(scope)} belongs to another connection`);
    }
  }

  /** Binds `tag` to `id` for connection `owner`; wakes the readers waiting for it. */
  bind(tag: string, id: string, owner: number, reads: number): void {
    this.checkBind(tag, owner);
    const scope = scopeOf(tag);
    if (scope !== '') this.scopes.set(scope, owner);
    if (this.byId.has(id)) throw new TrellisError('ERR_OBJECT_EXISTS', `${id} already has a tag`);
    this.tags.set(tag, { id, owner, readsLeft: reads });
    this.byId.set(id, tag);
    let own = this.byOwner.get(owner);
    if (!own) {
      own = new Set();
      this.byOwner.set(owner, own);
    }
    own.add(tag);
    this.names.put(tag, id, false);
  }

  /** The id bound to `tag`, now or when it is bound (ERR_TIMEOUT after timeoutMs; 0: until `waiter` closes). */
  wait(tag: string, timeoutMs: number, waiter: number): Promise<string> {
    const id = this.tags.get(tag)?.id;
    if (id !== undefined) return Promise.resolve(id);
    const scope = scopeOf(tag);
    if (scope !== '' && this.ended.has(scope)) return Promise.reject(this.over(scope));
    return this.names.wait(tag, timeoutMs, waiter);
  }

  /** The id bound to `tag`, if any. */
  get(tag: string): string | undefined {
    return this.tags.get(tag)?.id;
  }

  /**
   * One complete read of `tag`'s object; returns the id to delete when that
   * was its last allowed read (the tag is gone then), otherwise undefined.
   */
  consumed(tag: string, id: string): string | undefined {
    const t = this.tags.get(tag);
    if (!t || t.id !== id || t.readsLeft === 0) return undefined;
    t.readsLeft--;
    if (t.readsLeft > 0) return undefined;
    this.unbind(tag);
    return id;
  }

  /** The connection closed: its tags go, its scopes end, and the ids returned are its objects to delete. */
  ownerClosed(owner: number): string[] {
    for (const [scope, o] of this.scopes) if (o === owner) this.end(scope);
    const own = this.byOwner.get(owner);
    if (!own) return [];
    const ids: string[] = [];
    for (const tag of [...own]) {
      ids.push(this.tags.get(tag)!.id);
      this.unbind(tag);
    }
    return ids;
  }

  /**
   * Makes `owner` the owner of `scope` before it tags anything in it, so
   * that its closing ends the scope even then (a collective rank that dies
   * before its first write). ERR_NOT_OWNER if another connection owns it,
   * ERR_COLLECTIVE_ABORTED if it is over.
   */
  claim(scope: string, owner: number): void {
    if (this.ended.has(scope)) throw this.over(scope);
    const o = this.scopes.get(scope);
    if (o !== undefined && o !== owner) {
      throw new TrellisError('ERR_NOT_OWNER', `tag scope ${JSON.stringify(scope)} belongs to another connection`);
    }
    this.scopes.set(scope, owner);
  }

  /**
   * Ends `scope` for connection `owner` (ERR_NOT_OWNER if another owns it; a
   * scope nobody bound in yet may be ended by anyone): the ids returned are
   * the owner's objects tagged in it, to delete.
   */
  endScope(scope: string, owner: number): string[] {
    const o = this.scopes.get(scope);
    if (o !== undefined && o !== owner) {
      throw new TrellisError('ERR_NOT_OWNER', `tag scope ${JSON.stringify(scope)} belongs to another connection`);
    }
    const ids: string[] = [];
    for (const tag of [...(this.byOwner.get(owner) ?? [])]) {
      if (scopeOf(tag) !== scope) continue;
      ids.push(this.tags.get(tag)!.id);
      this.unbind(tag);
    }
    this.end(scope);
    return ids;
  }

  private end(scope: string): void {
    this.scopes.delete(scope);
    this.ended.add(scope);
    if (this.ended.size > ENDED_KEPT) this.ended.delete(this.ended.values().next().value as string);
    this.names.rejectWhere((tag) => scopeOf(tag) === scope, this.over(scope));
  }

  private over(scope: string): TrellisError {
    return new TrellisError(
      'ERR_COLLECTIVE_ABORTED',
      `tag scope ${JSON.stringify(scope)} is over: the connection that published in it closed or ended it`,
    );
  }

  /** Objects were deleted (by anyone): their tags go. */
  forget(ids: Iterable<string>): void {
    for (const id of ids) {
      const tag = this.byId.get(id);
      if (tag !== undefined) this.unbind(tag);
    }
  }

  /** Cancels the waits of a connection (it closed), or of all (null: shutdown). */
  cancelWaiters(waiter: number | null, error: TrellisError): void {
    this.names.cancelWaiters(waiter, error);
  }

  private unbind(tag: string): void {
    const t = this.tags.get(tag);
    if (!t) return;
    this.tags.delete(tag);
    this.byId.delete(t.id);
    const own = this.byOwner.get(t.owner);
    own?.delete(tag);
    if (own?.size === 0) this.byOwner.delete(t.owner);
    this.names.forget([tag]);
  }
}
