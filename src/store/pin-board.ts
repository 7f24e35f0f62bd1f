/**
 * Every client's pin page (layout: protocol/fast-directory.ts): one memfd per
 * client connection, which the client maps read-write and the store reads
 * before it frees or spills a published object. A page belongs to its
 * connection: when the connection goes (a kill -9 included) the page is
 * dropped, and with it every pin the client held.
 */
import { native } from '../native.js';
import { PIN_BYTES, PIN_FIRST_SLOT, PIN_GETS, PIN_HIGH, PIN_WORDS } from '../protocol/fast-directory.js';

interface Page {
  readonly fd: number;
  readonly words: Int32Array;
}

export class PinBoard {
  private readonly pages = new Map<number, Page>();
  /** Fast gets of connections gone, so the store's figure never goes down. */
  private goneGets = 0;
  /**
   * A page made ahead, so a client's hello is answered without a memfd being
   * created and mapped on the way (three system calls and a mapping).
   */
  private spare: Page | null = null;
  private closed = false;

  constructor(private readonly label: string) {}

  /** The pin page of connection `conn`, created on first ask; its fd is the store's (send a copy, do not close). */
  pageFd(conn: number): number {
    let p = this.pages.get(conn);
    if (!p) {
      p = this.spare ?? this.newPage();
      this.spare = null;
      this.pages.set(conn, p);
      setImmediate(() => {
        if (this.closed || this.spare !== null) return;
        try {
          this.spare = this.newPage();
        } catch {
          // out of fds or memory: the next hello makes its page itself, and fails there if it must
        }
      });
    }
    return p.fd;
  }

  private newPage(): Page {
    // Made before its connection is known, so the name says only what it is.
    const fd = native.memfdCreate(`${this.label}:pins:page`, PIN_BYTES);
    try {
      return { fd, words: new Int32Array(native.map(fd, PIN_BYTES, true)) };
    } catch (e) {
      native.closeFd(fd);
      throw e;
    }
  }

  /** The connection's pins no longer count. Returns whether it had a page. */
  drop(conn: number): boolean {
    const p = this.pages.get(conn);
    if (!p) return false;
    this.goneGets += p.words[PIN_GETS] >>> 0;
    this.pages.delete(conn);
    native.closeFd(p.fd);
    return true;
  }

  /**
   * The serials pinned now, on every page, with how many pins each has. Read after the retraction of an
   * object (an Atomics exchange, a full fence), a serial absent here can no
   * longer be used by any client: the object may be freed.
   */
  pinned(): Map<number, number> {
    const out = new Map<number, number>();
    for (const p of this.pages.values()) {
      const high = Math.min(Atomics.load(p.words, PIN_HIGH), PIN_WORDS);
      for (let i = PIN_FIRST_SLOT; i < high; i++) {
        const s = Atomics.load(p.words, i);
        if (s !== 0) out.set(s, (out.get(s) ?? 0) + 1);
      }
    }
    return out;
  }

  /** Fast gets all clients made, as their pages count them (a client can only lie about its own). */
  get fastGets(): number {
    let n = this.goneGets;
    for (const p of this.pages.values()) n += p.words[PIN_GETS] >>> 0;
    return n;
  }

  close(): void {
    this.closed = true;
    if (this.spare) native.closeFd(this.spare.fd);
    this.spare = null;
    for (const conn of [...this.pages.keys()]) this.drop(conn);
  }
}
