/**
 * The store's object table: every blob and object, their reference counts,
 * sealing, deletion and spilling.
 *
 * Lifetimes. An entry lives until it is deleted AND nothing pins it AND no
 * live parent lists it as a member. `pins` counts client references to the
 * entry or to any ancestor (a get pins the whole tree, so a view handed to a
 * client can never be spilled or freed under it). `parents` counts objects
 * that list the entry as a member. Deleting an object that clients still hold
 * hides it from new gets at once and frees it on the last release.
 *
 * Spilling. Sealed blobs that nothing pins sit in `lru`, least recently used
 * first; when an allocation does not fit, the oldest are written to the spill
 * directory and their memory freed, and a later get reads them back.
 *
 * Shape. Clients choose how members nest, so every walk over members is a
 * loop with its own stack (never recursion), and an object is refused before
 * anything changes when its tree would be deeper than MAX_OBJECT_DEPTH or
 * hold more than MAX_TREE_NODES records: that bounds every walk and answer.
 *
 * Fast path. Small sealed Blobs and Tensors are also published in the fast
 * directory (fast-directory.ts), where clients get them with no request and
 * pin them in their own pin page (pin-board.ts). Those pins are not in `pins`:
 * an entry is retracted from the directory when it is deleted (or its blob is
 * about to be spilled), and is freed or spilled only once no pin page holds
 * its serial; until then it waits in `deferred`, checked again when a client
 * says it let go (`unpinned`), when a connection goes, and on a timer.
 *
 * Records. Metadata and member lists live on the store's heap, not in the
 * arena; their bytes are counted (recordsUsed) against a limit of their own,
 * checked before an object is made (ERR_OUT_OF_MEMORY), so no client can
 * exhaust the heap with metadata.
 */

/** What a member id costs in a record (the id string and its slot). */
const MEMBER_BYTES = 20;
/** A list answer stops after about this many bytes of records, and names where the next page starts. */
export const LIST_PAGE_BYTES = 4 * 1024 * 1024;

import { TrellisError } from '../errors.js';
import { MAX_OBJECT_DEPTH, MAX_TREE_NODES, metaBytes } from '../protocol/fields.js';
import { BLOB_TYPENAME } from '../protocol/messages.js';
import type { BlobLocation, ObjectHeader, ObjectRecord, ObjectSpec, ObjectSummary } from '../protocol/records.js';
import { alignUp } from './allocator.js';
import type { Arena } from './arena.js';
import type { FastDirectory } from './fast-directory.js';
import type { IdAllocator } from './ids.js';
import type { PinBoard } from './pin-board.js';
import type { SpillDir } from './spill.js';

export { BLOB_TYPENAME };

/** The table's own state of one object; its header is what every record of the object shows. */
export interface Entry extends Readonly<ObjectHeader> {
  readonly members: string[];
  readonly isBlob: boolean;
  /** Levels of members below this entry (a blob: 0). */
  readonly depth: number;
  /** Records in this entry's tree, a member counted once per path (a blob: 1). */
  readonly treeSize: number;
  /** Bytes of its metadata and member list, counted in recordsUsed. */
  recordBytes: number;
  loc: BlobLocation | null;
  sealed: boolean;
  /** Connection that created an unsealed blob; 0 once sealed. */
  owner: number;
  pins: number;
  parents: number;
  deleted: boolean;
  spillPath: string | null;
  /** Published to the metadata service. */
  persisted: boolean;
  readonly createdAt: number;
  /** Serial of its fast-directory entry while published or still pinned by it (0: neither). */
  serial: number;
  /** Retraction number of its entry (see ObjectTable.fastPinned). */
  retractedAt: number;
  /** For a blob: the entries whose fast-directory records hold this blob's location. */
  fastOwners: Entry[] | null;
}

/** The fast path's two halves, when the store serves it. */
export interface FastPath {
  readonly directory: FastDirectory;
  readonly pins: PinBoard;
}

export interface TableCounters {
  created: number;
  sealed: number;
  aborted: number;
  gets: number;
  freed: number;
  spills: number;
  restores: number;
  /** Frees that had to wait for a client's fast-path pin. */
  fastDeferrals: number;
}

export class ObjectTable {
  private readonly entries = new Map<string, Entry>();
  private readonly lru = new Map<string, Entry>();
  /** Blobs spilled only when nothing else is left to spill (local copies of under-replicated objects). */
  private spillLast: ReadonlySet<string> = new Set();
  private readonly refs = new Map<number, Map<string, number>>();
  private readonly unsealedBy = new Map<number, Set<string>>();
  readonly counters: TableCounters = {
    created: 0,
    sealed: 0,
    aborted: 0,
    gets: 0,
    freed: 0,
    spills: 0,
    restores: 0,
    fastDeferrals: 0,
  };
  /** Bytes of all entries' metadata and member lists. */
  recordsUsed = 0;
  private liveObjects = 0;
  private blobEntries = 0;
  /** The one stack of every walk (walks never nest), so a get or release allocates none. */
  private readonly walkStack: Entry[] = [];
  private readonly recordStack: ObjectRecord[] = [];
  /** Deleted entries that would be free but for a client's fast pin. */
  private readonly deferred = new Set<Entry>();
  private retractions = 0;
  /** The highest id made here, and whether one came after a higher one (a put ring's leased id). */
  private lastId = '';
  private disordered = false;
  /** Pins seen after retraction number `epoch` (null: read the pages again). */
  private snapshot: { set: Map<number, number>; epoch: number } | null = null;

  constructor(
    private readonly arena: Arena,
    private readonly ids: IdAllocator,
    private readonly spill: SpillDir | null,
    /** Most bytes recordsUsed may reach. */
    readonly recordsLimit: number = Number.POSITIVE_INFINITY,
    private readonly fast: FastPath | null = null,
  ) {}

  /** Entries deleted but kept because a client still pins them through the fast path. */
  get deferredCount(): number {
    return this.deferred.size;
  }

  /** Live objects (not deleted, blobs not counted). Kept as counts, not walks: status and every metrics scrape read them (a walk of 200k entries took 10-50 ms). */
  get objectCount(): number {
    return this.liveObjects;
  }

  /** Blobs in the table, deleted ones still held included. */
  get blobCount(): number {
    return this.blobEntries;
  }

  get size(): number {
    return this.entries.size;
  }

  get spilledBytes(): number {
    return this.spill?.spilledBytes ?? 0;
  }

  get spilledCount(): number {
    return this.spill?.spilledCount ?? 0;
  }

  /** A visible (sealed or not, not deleted) entry, or ERR_OBJECT_NOT_FOUND. */
  lookup(id: string): Entry {
    const e = this.entries.get(id);
    if (!e || e.deleted) throw new TrellisError('ERR_OBJECT_NOT_FOUND', `object ${id} does not exist`);
    return e;
  }

  has(id: string): boolean {
    const e = this.entries.get(id);
    return e !== undefined && !e.deleted;
  }

  // ---- creation ---------------------------------------------------------

  /** Allocates an unsealed blob owned by `conn`. */
  createBlob(size: number, conn: number): Entry {
    const loc = this.allocate(size);
    const e = this.newEntry(BLOB_TYPENAME, {}, [], size, true, loc);
    e.sealed = false;
    e.owner = conn;
    let set = this.unsealedBy.get(conn);
    if (!set) {
      set = new Set();
      this.unsealedBy.set(conn, set);
    }
    set.add(e.id);
    return e;
  }

  /** Seals an unsealed blob; with `spec`, also records an object whose first member is the blob. */
  seal(id: string, conn: number, spec?: ObjectSpec): Entry {
    const out = this.sealEntry(id, conn, spec);
    this.publish(out);
    return out;
  }

  private sealEntry(id: string, conn: number, spec?: ObjectSpec): Entry {
    const e = this.lookup(id);
    if (!e.isBlob) throw new TrellisError('ERR_BAD_REQUEST', `${id} is a ${e.typename}, not a blob`);
    if (e.sealed) throw new TrellisError('ERR_ALREADY_SEALED', `blob ${id} is already sealed`);
    if (e.owner !== conn) throw new TrellisError('ERR_NOT_OWNER', `blob ${id} belongs to another connection`);
    if (spec) {
      const members = this.checkMembers(spec.members);
      if (spec.typename !== BLOB_TYPENAME) {
        shapeOf(members, 1);
        this.checkRecords(recordCost(spec, 1));
      }
    }
    e.sealed = true;
    e.owner = 0;
    this.unsealedBy.get(conn)?.delete(id);
    this.counters.sealed++;
    this.lru.set(e.id, e);
    if (!spec || spec.typename === BLOB_TYPENAME) return e;
    return this.makeObject({ ...spec, members: [id, ...spec.members] });
  }

  /** Seals an unsealed blob that is an object of its own, with the metadata its writer gave it. */
  sealBlob(id: string, conn: number, meta: Record<string, unknown>): Entry {
    const bytes = metaBytes(meta);
    this.checkRecords(bytes);
    const e = this.sealEntry(id, conn);
    e.recordBytes = bytes;
    this.recordsUsed += bytes;
    // The table's own entry, not yet seen by anyone but its writer. Keys are
    // defined, not assigned: a client's "__proto__" key must stay a key.
    for (const k of Object.keys(meta)) {
      Object.defineProperty(e.meta, k, { value: meta[k], enumerable: true, writable: true, configurable: true });
    }
    this.publish(e);
    return e;
  }

  abort(id: string, conn: number): void {
    const e = this.lookup(id);
    if (!e.isBlob) throw new TrellisError('ERR_BAD_REQUEST', `${id} is a ${e.typename}, not a blob`);
    if (e.sealed) throw new TrellisError('ERR_ALREADY_SEALED', `blob ${id} is sealed; delete it instead`);
    if (e.owner !== conn) throw new TrellisError('ERR_NOT_OWNER', `blob ${id} belongs to another connection`);
    this.unsealedBy.get(conn)?.delete(id);
    e.deleted = true;
    this.counters.aborted++;
    this.tryFree(e);
  }

  /** put: the payload becomes a new sealed blob, the first member of the object `spec` describes. */
  putInline(spec: ObjectSpec, payload: Uint8Array): Entry {
    const members = this.checkMembers(spec.members);
    if (spec.typename === BLOB_TYPENAME && spec.members.length > 0) {
      throw new TrellisError('ERR_BAD_REQUEST', 'a Blob has no members');
    }
    shapeOf(members, 1);
    const cost = recordCost(spec, spec.typename === BLOB_TYPENAME ? 0 : 1);
    this.checkRecords(cost);
    const loc = this.allocate(payload.byteLength);
    this.arena.view(loc).set(payload);
    const blob = this.newEntry(
      BLOB_TYPENAME,
      spec.typename === BLOB_TYPENAME ? spec.meta : {},
      [],
      payload.byteLength,
      true,
      loc,
      BLOB_SHAPE,
      spec.typename === BLOB_TYPENAME ? cost : 0,
    );
    this.lru.set(blob.id, blob);
    this.counters.sealed++;
    const out =
      spec.typename === BLOB_TYPENAME ? blob : this.makeObject({ ...spec, members: [blob.id, ...spec.members] });
    this.publish(out);
    return out;
  }

  /** A block of the arena for a client's put ring (spilling to make room, as any allocation). */
  allocateSlab(size: number): BlobLocation {
    return this.allocate(size);
  }

  /**
   * A put that arrived by ring: the bytes already sit at `loc` (inside the
   * client's slab), and the ids were leased (`counter`: the blob's; a Tensor
   * takes `counter + 1` too). The caller checked every field. The record
   * limit is not checked: a ring record is at most a Tensor of four
   * dimensions, one per 64 bytes of leased arena at most, so the arena bounds it.
   */
  adoptRing(loc: BlobLocation, counter: number, tensor: { dtype: string; shape: number[] } | null): Entry {
    const blob = this.newEntry(BLOB_TYPENAME, {}, [], loc.size, true, loc, BLOB_SHAPE, 0, this.ids.idOf(counter));
    this.lru.set(blob.id, blob);
    this.counters.sealed++;
    let out = blob;
    if (tensor !== null) {
      const meta = { dtype: tensor.dtype, shape: tensor.shape };
      blob.parents++;
      out = this.newEntry(
        TENSOR_TYPENAME,
        meta,
        [blob.id],
        loc.size,
        false,
        null,
        RING_TENSOR_SHAPE,
        metaBytes(meta) + MEMBER_BYTES,
        this.ids.idOf(counter + 1),
      );
    }
    this.publish(out);
    return out;
  }

  /**
   * Checks, before anything is allocated, that an object over `members` and
   * `newBlobs` blobs still to come could be made: members sealed, shape in limits.
   */
  checkObject(spec: ObjectSpec, newBlobs: number): void {
    shapeOf(this.checkMembers(spec.members), newBlobs);
    this.checkRecords(recordCost(spec, newBlobs));
  }

  /** An object over existing sealed members (a make request): published on the fast path when it fits. */
  make(spec: ObjectSpec): Entry {
    const e = this.makeObject(spec);
    this.publish(e);
    return e;
  }

  /** An object over existing sealed members. */
  makeObject(spec: ObjectSpec): Entry {
    if (spec.typename === BLOB_TYPENAME) throw new TrellisError('ERR_BAD_REQUEST', 'Blobs are made by create/put');
    const members = this.checkMembers(spec.members);
    const shape = shapeOf(members, 0);
    const cost = recordCost(spec, 0);
    this.checkRecords(cost);
    let nbytes = 0;
    for (const m of members) {
      nbytes += m.nbytes;
      m.parents++;
    }
    return this.newEntry(spec.typename, spec.meta, spec.members.slice(), nbytes, false, null, shape, cost);
  }

  // ---- access -----------------------------------------------------------

  /** Pins each object for `conn` and returns its tree; restores spilled blobs. All or nothing. */
  get(ids: string[], conn: number): ObjectRecord[] {
    const found: Entry[] = [];
    for (const id of ids) {
      const e = this.lookup(id);
      if (!e.sealed) throw new TrellisError('ERR_NOT_SEALED', `blob ${id} is not sealed yet`);
      found.push(e);
    }
    const pinned: Entry[] = [];
    try {
      for (const e of found) {
        this.addRef(conn, e);
        pinned.push(e);
        this.restoreTree(e);
      }
    } catch (err) {
      for (const e of pinned) this.dropRef(conn, e.id);
      throw err;
    }
    this.counters.gets += found.length;
    return found.map((e) => this.record(e));
  }

  release(ids: string[], conn: number): void {
    this.snapshot = null;
    const held = this.refs.get(conn);
    for (const id of ids) {
      if (!held?.has(id)) throw new TrellisError('ERR_NOT_REFERENCED', `this connection holds no reference to ${id}`);
    }
    for (const id of ids) this.dropRef(conn, id);
  }

  /** Deletes objects (and, when deep, members no other object uses). Held objects go on the last release. */
  delete(ids: string[], deep: boolean): Entry[] {
    this.snapshot = null;
    const found = ids.map((id) => this.lookup(id));
    // A set, not a scan per id: a hostile delete may name 100,000 members of one object.
    const listed = new Set<string>();
    for (const p of found) for (const m of p.members) listed.add(m);
    for (const e of found) {
      if (!e.sealed) throw new TrellisError('ERR_NOT_SEALED', `blob ${e.id} is not sealed; abort it instead`);
      if (e.parents > 0 && !listed.has(e.id)) {
        throw new TrellisError('ERR_OBJECT_IN_USE', `${e.id} is a member of ${e.parents} live object(s)`);
      }
    }
    const marked: Entry[] = [];
    for (const e of found) this.markDeleted(e, deep, marked);
    for (const e of found) this.tryFree(e);
    return marked;
  }

  /** A sealed, visible entry and everything under it, parents before members. */
  tree(id: string): Entry[] {
    const root = this.lookup(id);
    if (!root.sealed) throw new TrellisError('ERR_NOT_SEALED', `${id} is not sealed`);
    const out: Entry[] = [];
    const seen = new Set<string>();
    const stack = [root];
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      out.push(e);
      for (let i = e.members.length - 1; i >= 0; i--) stack.push(this.entries.get(e.members[i])!);
    }
    return out;
  }

  /** Entries published to the metadata service and still alive, for re-publishing. */
  persistedEntries(): Entry[] {
    const out: Entry[] = [];
    for (const e of this.entries.values()) if (e.persisted && !e.deleted) out.push(e);
    return out;
  }

  /** Everything a connection held: references dropped, unsealed blobs aborted. */
  dropConnection(conn: number): void {
    this.snapshot = null;
    // Its pin page went with it: what it alone kept may go now.
    if (this.fast?.pins.drop(conn)) this.recheckDeferred();
    const held = this.refs.get(conn);
    if (held) {
      for (const [id] of held) this.dropRef(conn, id, true);
      this.refs.delete(conn);
    }
    const unsealed = this.unsealedBy.get(conn);
    if (unsealed) {
      for (const id of unsealed) {
        const e = this.entries.get(id);
        if (e && !e.sealed) {
          e.deleted = true;
          this.counters.aborted++;
          this.tryFree(e);
        }
      }
      this.unsealedBy.delete(conn);
    }
  }

  /**
   * A page of sealed, visible objects in id order, after `cursor` when given:
   * at most `limit`, and about LIST_PAGE_BYTES of records (at least one), so
   * no answer grows without bound. `next` is the cursor of the following page.
   */
  list(typename: string | undefined, limit: number, cursor?: string): { objects: ObjectSummary[]; next?: string } {
    const out: ObjectSummary[] = [];
    let bytes = 0;
    let last: string | undefined;
    // References held through the fast path count as references too.
    const fastPins = this.fast?.pins.pinned();
    // Entries are kept in creation order, which is id order until a put ring
    // brings leased ids (other clients made objects meanwhile): then in id
    // order, sorted per page, so pages neither skip nor repeat.
    const inOrder = this.disordered ? [...this.entries.values()].sort(byId) : this.entries.values();
    for (const e of inOrder) {
      if (cursor !== undefined && e.id <= cursor) continue;
      if (out.length >= limit || (out.length > 0 && bytes + e.recordBytes > LIST_PAGE_BYTES)) {
        return { objects: out, next: last };
      }
      if (e.deleted || !e.sealed) continue;
      if (typename !== undefined && e.typename !== typename) continue;
      out.push({
        id: e.id,
        typename: e.typename,
        nbytes: e.nbytes,
        meta: e.meta,
        members: e.members,
        spilled: e.isBlob && e.loc === null,
        references: e.pins + (e.serial !== 0 ? (fastPins?.get(e.serial) ?? 0) : 0),
      });
      bytes += e.recordBytes + 100;
      last = e.id;
    }
    return { objects: out };
  }

  // ---- internals --------------------------------------------------------

  private newEntry(
    typename: string,
    meta: Record<string, unknown>,
    members: string[],
    nbytes: number,
    isBlob: boolean,
    loc: BlobLocation | null,
    shape: Shape = BLOB_SHAPE,
    recordBytes = 0,
    id = this.ids.allocate(),
  ): Entry {
    // Ring puts bring ids leased earlier: the table is then no longer in id order (see list).
    if (id > this.lastId) this.lastId = id;
    else this.disordered = true;
    const e: Entry = {
      id,
      typename,
      meta,
      members,
      nbytes,
      isBlob,
      depth: shape.depth,
      treeSize: shape.treeSize,
      recordBytes,
      loc,
      sealed: true,
      owner: 0,
      pins: 0,
      parents: 0,
      deleted: false,
      spillPath: null,
      persisted: false,
      createdAt: Date.now(),
      serial: 0,
      retractedAt: 0,
      fastOwners: null,
    };
    this.entries.set(e.id, e);
    if (isBlob) this.blobEntries++;
    else this.liveObjects++;
    this.recordsUsed += recordBytes;
    this.counters.created++;
    return e;
  }

  /** ERR_OUT_OF_MEMORY when `bytes` more of records would pass the limit. */
  private checkRecords(bytes: number): void {
    if (this.recordsUsed + bytes <= this.recordsLimit) return;
    throw new TrellisError(
      'ERR_OUT_OF_MEMORY',
      `object records (metadata and member lists) would take ${this.recordsUsed + bytes} bytes, more than the store's ${this.recordsLimit} (maxRecordBytes)`,
    );
  }

  private checkMembers(ids: string[]): Entry[] {
    return ids.map((id) => {
      const m = this.lookup(id);
      if (!m.sealed) throw new TrellisError('ERR_NOT_SEALED', `member ${id} is not sealed`);
      return m;
    });
  }

  private allocate(size: number): BlobLocation {
    let loc = this.arena.tryAlloc(size);
    // A block larger than the whole arena never fits; spilling for it would only empty the store.
    const fits = alignUp(Math.max(size, 1)) <= this.arena.opts.limit;
    while (loc === null && fits && this.spillOne()) loc = this.arena.tryAlloc(size);
    if (loc === null) {
      const frag = this.arena.fragmentation();
      throw new TrellisError(
        'ERR_OUT_OF_MEMORY',
        `cannot allocate ${size} bytes: ${this.arena.memoryUsed} of ${this.arena.opts.limit} bytes in use` +
          (frag > 0.05 ? `, fragmentation ${(frag * 100).toFixed(1)}%` : '') +
          (this.spill ? ', nothing left to spill' : ', no spill directory configured'),
      );
    }
    return loc;
  }

  /** Blobs to spill only after every other spillable blob (replication sets them). */
  setSpillLast(blobIds: ReadonlySet<string>): void {
    this.spillLast = blobIds;
  }

  /** The least recently used spillable blob, those in spillLast only when no other is left. */
  private spillCandidate(): Entry | undefined {
    this.snapshot = null;
    const last: Entry[] = [];
    for (const e of this.lru.values()) {
      if (this.spillLast.has(e.id)) last.push(e);
      else if (this.unpublishedForSpill(e)) return e;
    }
    return last.find((e) => this.unpublishedForSpill(e));
  }

  /** A blob a client may be reading through the fast path stays until it lets go. */
  private unpublishedForSpill(e: Entry): boolean {
    if (e.fastOwners !== null && !this.unpublishAll(e.fastOwners)) return false;
    e.fastOwners = null;
    return true;
  }

  private spillOne(): boolean {
    if (!this.spill) return false;
    const e = this.spillCandidate();
    if (e === undefined) return false;
    const loc = e.loc!;
    // Off the queue only once written: a blob whose write failed (disk full) stays spillable.
    e.spillPath = this.spill.write(e.id, this.arena.view(loc));
    this.lru.delete(e.id);
    e.loc = null;
    this.arena.free(loc);
    this.counters.spills++;
    return true;
  }

  private restoreTree(root: Entry): void {
    const stack = this.walkFrom(root);
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      if (!e.isBlob) {
        for (const m of e.members) stack.push(this.entries.get(m)!);
        continue;
      }
      if (e.loc !== null || e.spillPath === null) continue;
      const loc = this.allocate(e.nbytes);
      try {
        this.spill!.restore(e.spillPath, this.arena.view(loc));
      } catch (err) {
        this.arena.free(loc);
        throw err;
      }
      e.loc = loc;
      e.spillPath = null;
      this.counters.restores++;
    }
  }

  private addRef(conn: number, e: Entry): void {
    let held = this.refs.get(conn);
    if (!held) {
      held = new Map();
      this.refs.set(conn, held);
    }
    const n = held.get(e.id) ?? 0;
    held.set(e.id, n + 1);
    if (n === 0) this.pin(e);
  }

  private dropRef(conn: number, id: string, all = false): void {
    const held = this.refs.get(conn);
    const n = held?.get(id);
    if (!held || n === undefined) return;
    if (n > 1 && !all) {
      held.set(id, n - 1);
      return;
    }
    held.delete(id);
    const e = this.entries.get(id);
    if (e) {
      this.unpin(e);
      this.tryFree(e);
    }
  }

  /** The walk stack, emptied (a walk that threw may have left entries) and holding `root`. */
  private walkFrom(root: Entry): Entry[] {
    const s = this.walkStack;
    s.length = 0;
    s.push(root);
    return s;
  }

  /** A pin counts once per path from the pinned root (see Lifetimes), so shared members are visited per path. */
  private pin(root: Entry): void {
    const stack = this.walkFrom(root);
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      e.pins++;
      if (e.isBlob) this.lru.delete(e.id);
      for (const m of e.members) stack.push(this.entries.get(m)!);
    }
  }

  private unpin(root: Entry): void {
    const stack = this.walkFrom(root);
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      e.pins--;
      if (e.isBlob && e.pins === 0 && e.loc !== null && e.sealed) this.lru.set(e.id, e);
      for (const m of e.members) stack.push(this.entries.get(m)!);
    }
  }

  private markDeleted(root: Entry, deep: boolean, marked: Entry[]): void {
    const stack = this.walkFrom(root);
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      if (e.deleted) continue;
      e.deleted = true;
      if (!e.isBlob) this.liveObjects--;
      this.retract(e);
      marked.push(e);
      if (!deep) continue;
      // A member no other object uses: all its parent links come from e (it may list it twice).
      const links = new Map<string, number>();
      for (const m of e.members) links.set(m, (links.get(m) ?? 0) + 1);
      for (const [m, n] of links) {
        const me = this.entries.get(m)!;
        if (me.parents === n) stack.push(me);
      }
    }
  }

  private tryFree(root: Entry): void {
    const stack = this.walkFrom(root);
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      if (!e.deleted || e.pins > 0 || e.parents > 0) continue;
      if (e.serial !== 0) {
        this.retract(e);
        if (this.fastPinned(e)) {
          if (!this.deferred.has(e)) {
            this.deferred.add(e);
            this.counters.fastDeferrals++;
          }
          continue;
        }
        e.serial = 0;
        this.deferred.delete(e);
      }
      if (!this.entries.delete(e.id)) continue;
      this.counters.freed++;
      this.recordsUsed -= e.recordBytes;
      if (e.isBlob) {
        this.blobEntries--;
        this.lru.delete(e.id);
        if (e.loc) this.arena.free(e.loc);
        if (e.spillPath) this.spill?.discard(e.spillPath, e.nbytes);
        e.loc = null;
      }
      for (const m of e.members) {
        const me = this.entries.get(m);
        if (!me) continue;
        me.parents--;
        stack.push(me);
      }
    }
  }

  // ---- fast path ----------------------------------------------------------

  /** Publishes a new sealed object in the fast directory, when it has one and the object fits it. */
  private publish(e: Entry): void {
    if (!this.fast) return;
    const blob = e.isBlob ? e : e.members.length === 1 ? this.entries.get(e.members[0])! : null;
    if (blob === null || !blob.isBlob || blob.loc === null) return;
    const serial = this.fast.directory.publish({
      id: e.id,
      typename: e.typename,
      meta: e.meta,
      blobId: blob.id,
      loc: blob.loc,
    });
    if (serial === 0) return;
    e.serial = serial;
    if (blob.fastOwners === null) blob.fastOwners = [e];
    else blob.fastOwners.push(e);
  }

  /** Retracts every owner; true when no client pins any of them any more (their serials are dropped then). */
  private unpublishAll(owners: Entry[]): boolean {
    let free = true;
    for (const o of owners) this.retract(o);
    for (const o of owners) if (o.serial !== 0 && this.fastPinned(o)) free = false;
    if (free) for (const o of owners) o.serial = 0;
    return free;
  }

  /** Takes an entry out of the fast directory (its serial stays until no pin holds it). */
  private retract(e: Entry): void {
    if (e.serial === 0 || !this.fast) return;
    this.fast.directory.retract(e.id, e.serial);
    if (e.retractedAt === 0) e.retractedAt = ++this.retractions;
  }

  /** Whether a retracted entry may still be read by a client; the pages are read at most once per batch of retractions. */
  private fastPinned(e: Entry): boolean {
    if (!this.fast) return false;
    if (this.snapshot === null || this.snapshot.epoch < e.retractedAt) {
      this.snapshot = { set: this.fast.pins.pinned(), epoch: this.retractions };
    }
    return this.snapshot.set.has(e.serial);
  }

  /** Frees what waited only for fast pins that are gone now. */
  recheckDeferred(): void {
    if (this.deferred.size === 0) return;
    this.snapshot = null;
    for (const e of [...this.deferred]) {
      if (!this.deferred.has(e)) continue;
      if (this.fastPinned(e)) continue;
      this.deferred.delete(e);
      this.tryFree(e);
    }
  }

  /** The tree of records a get answers, members in order. */
  private record(root: Entry): ObjectRecord {
    const top = recordOf(root);
    if (root.members.length === 0) return top;
    const stack = this.walkFrom(root);
    const recs = this.recordStack;
    recs.length = 0;
    recs.push(top);
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      const r = recs.pop()!;
      for (const m of e.members) {
        const me = this.entries.get(m)!;
        const mr = recordOf(me);
        r.members.push(mr);
        if (me.members.length > 0) {
          stack.push(me);
          recs.push(mr);
        }
      }
    }
    return top;
  }
}

function byId(a: Entry, b: Entry): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** One entry's own record, its members still to be filled in. */
function recordOf(e: Entry): ObjectRecord {
  const r: ObjectRecord = { id: e.id, typename: e.typename, nbytes: e.nbytes, meta: e.meta, members: [] };
  if (e.loc) r.blob = e.loc;
  return r;
}

interface Shape {
  depth: number;
  treeSize: number;
}

const BLOB_SHAPE: Shape = { depth: 0, treeSize: 1 };
/** A Tensor over one blob. */
const RING_TENSOR_SHAPE: Shape = { depth: 1, treeSize: 2 };
const TENSOR_TYPENAME = 'Tensor';

/** Bytes an object's record takes: its metadata and its member list (with `newBlobs` members still to come). */
function recordCost(spec: ObjectSpec, newBlobs: number): number {
  return (spec.metaBytes ?? metaBytes(spec.meta)) + MEMBER_BYTES * (spec.members.length + newBlobs);
}

/**
 * The shape of an object over `members` plus `newBlobs` blobs made with it,
 * or ERR_BAD_REQUEST when it breaks a limit. O(members): each entry carries
 * its own depth and tree size.
 */
function shapeOf(members: Entry[], newBlobs: number): Shape {
  let depth = newBlobs > 0 ? 1 : 0;
  let treeSize = 1 + newBlobs;
  for (const m of members) {
    if (m.depth + 1 > depth) depth = m.depth + 1;
    treeSize += m.treeSize;
  }
  if (depth > MAX_OBJECT_DEPTH) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `an object nested ${depth} levels deep exceeds the maximum depth of ${MAX_OBJECT_DEPTH}`,
    );
  }
  if (treeSize > MAX_TREE_NODES) {
    throw new TrellisError(
      'ERR_BAD_REQUEST',
      `an object whose tree holds ${treeSize} records (members counted per path) exceeds the maximum of ${MAX_TREE_NODES}`,
    );
  }
  return { depth, treeSize };
}
