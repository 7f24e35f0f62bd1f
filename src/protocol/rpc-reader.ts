/**
 * Reads an RPC stream: frames (src/protocol/frame.ts) and, after a frame
 * whose header announces `raw` parts, exactly that many raw bytes, which go
 * straight to where the frame's handler wants them (arena blobs, fresh
 * buffers) or are skipped.
 *
 * Bytes arrive two ways. `push` takes bytes that landed in a buffer of the
 * socket's (a 'data' chunk, or a scratch buffer reused for every read): raw
 * bytes are copied to their destination, a partial frame is kept. `landed`
 * says that bytes were read straight into the buffer `nextBuffer` handed out
 * (net's `onread` option), so they are already in place and nothing is
 * copied: that is the receive path of a transfer at wire speed.
 */
import { asTrellisError, TrellisError } from '../errors.js';
import { type Frame, FrameReader } from './frame.js';
import { rawSizes } from './rpc-messages.js';

/** Most bytes asked of one read straight into a destination. */
const MAX_DIRECT_READ = 64 * 1024 * 1024;

/** Where the raw parts a frame announced go. */
export interface RawTarget {
  /** One destination per part, exactly as long as the part; null skips the part's bytes. */
  parts: (Uint8Array | null)[];
  /** Called once every byte of every part has arrived. */
  done(): void;
}

export interface ReaderHandler {
  /** A whole frame; `raw` is its announced parts (then a target is required), or null. */
  frame(frame: Frame, raw: number[] | null): RawTarget | null;
  /** The stream broke (bad framing, or a handler threw); the reader reads no more. */
  error(err: TrellisError): void;
}

export class RpcReader extends FrameReader {
  private target: RawTarget | null = null;
  private sizes: number[] = [];
  private part = 0;
  private pos = 0;
  private broken = false;
  /** Raw bytes received so far (in place or copied). */
  rawBytes = 0;

  constructor(
    maxFrame: number,
    private readonly handler: ReaderHandler,
  ) {
    super(maxFrame);
  }

  /**
   * Bytes read into a buffer the reader does not own. With `transient` the
   * buffer is reused for the next read, so whatever must wait is copied.
   */
  push(chunk: Uint8Array, transient = false): void {
    if (this.broken) return;
    let off = 0;
    try {
      while (off < chunk.length && !this.broken) {
        if (this.target && this.buffered === 0) {
          const n = this.copyOut(chunk, off, chunk.length - off);
          off += n;
          this.advance(n);
          continue;
        }
        const rest = chunk.subarray(off);
        this.append(transient ? Buffer.from(rest) : Buffer.from(rest.buffer, rest.byteOffset, rest.byteLength));
        off = chunk.length;
        this.drain();
      }
    } catch (e) {
      this.fail(e);
    }
  }

  /**
   * Where the next read should land: the rest of the current raw part (so its
   * bytes need no copy), or null when the caller should read into its own
   * buffer (a frame is next, or the part is being skipped).
   */
  nextBuffer(): Uint8Array | null {
    if (this.broken || !this.target || this.buffered > 0) return null;
    const dst = this.target.parts[this.part];
    if (!dst) return null;
    const left = this.sizes[this.part] - this.pos;
    return dst.subarray(this.pos, this.pos + Math.min(left, MAX_DIRECT_READ));
  }

  /** `n` bytes were read straight into the buffer `nextBuffer` returned. */
  landed(n: number): void {
    if (this.broken) return;
    try {
      this.advance(n);
    } catch (e) {
      this.fail(e);
    }
  }

  /** Stops reading; nothing more is delivered. */
  stop(): void {
    this.broken = true;
    this.chunks = [];
    this.buffered = 0;
    this.target = null;
  }

  private fail(e: unknown): void {
    if (this.broken) return;
    this.stop();
    this.handler.error(asTrellisError(e, 'ERR_INTERNAL', 'RPC stream handler failed'));
  }

  /** Frames (and raw bytes that follow them) out of the buffered chunks. */
  private drain(): void {
    while (!this.broken && this.buffered > 0) {
      if (this.target) {
        const first = this.chunks[0];
        const n = this.copyOut(first, 0, first.length);
        this.consume(n);
        this.advance(n);
        continue;
      }
      const frame = this.nextFrame();
      if (frame === null) return;
      this.onFrame(frame);
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.payload.length > 0) throw new TrellisError('ERR_PROTOCOL', 'RPC frames carry no payload; use raw');
    const raw = rawSizes(frame.header);
    const target = this.handler.frame(frame, raw);
    if (raw === null || this.broken) return;
    if (!target || target.parts.length !== raw.length) {
      throw new TrellisError('ERR_INTERNAL', 'no destination for the raw bytes of a frame');
    }
    raw.forEach((n, i) => {
      const p = target.parts[i];
      if (p && p.length !== n) throw new TrellisError('ERR_INTERNAL', `destination ${i} holds ${p.length}, not ${n}`);
    });
    this.target = target;
    this.sizes = raw;
    this.part = 0;
    this.pos = 0;
    this.advance(0);
  }

  /** Copies (or skips) up to `len` bytes of `src` at `off` into the current part; returns how many it took. */
  private copyOut(src: Uint8Array, off: number, len: number): number {
    const dst = this.target!.parts[this.part];
    const n = Math.min(len, this.sizes[this.part] - this.pos);
    if (dst && n > 0) dst.set(src.subarray(off, off + n), this.pos);
    return n;
  }

  /** Moves past `n` bytes of the current part; finishes parts and the target as they fill. */
  private advance(n: number): void {
    const t = this.target!;
    this.pos += n;
    this.rawBytes += n;
    while (this.part < this.sizes.length && this.pos === this.sizes[this.part]) {
      this.part++;
      this.pos = 0;
    }
    if (this.part === this.sizes.length) {
      this.target = null;
      t.done();
    }
  }
}
