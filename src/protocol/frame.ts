/**
 * Framing shared by the IPC socket and the fd channel.
 *
 *   u32 LE  frameLength   bytes after this field (header length field + header + payload)
 *   u32 LE  headerLength  bytes of the JSON header
 *   ...     header        UTF-8 JSON object, always with a string `t` (message type)
 *   ...     payload       raw bytes (inline object data), may be empty
 *
 * Frames larger than the negotiated maximum are refused before any of their
 * bytes are buffered.
 */
import { TrellisError } from '../errors.js';

export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
/** Largest frame before the handshake (IPC and RPC): a hello is small, and strangers get no big buffers. */
export const MAX_HELLO_FRAME = 64 * 1024;
const PREFIX = 4;

export interface Frame {
  header: Record<string, unknown>;
  payload: Buffer;
}

export function encodeFrame(header: object, payload?: Uint8Array): Buffer {
  return encodeJsonFrame(JSON.stringify(header), payload);
}

/** A frame around a header already written as JSON text. */
export function encodeJsonFrame(text: string, payload?: Uint8Array): Buffer {
  const json = Buffer.from(text);
  const plen = payload ? payload.byteLength : 0;
  const out = Buffer.allocUnsafe(8 + json.length + plen);
  out.writeUInt32LE(4 + json.length + plen, 0);
  out.writeUInt32LE(json.length, 4);
  json.copy(out, 8);
  if (payload && plen > 0) out.set(payload, 8 + json.length);
  return out;
}

/**
 * The one frame reader: buffers chunks and cuts whole frames out of them,
 * refusing a bad length before buffering the frame (ERR_PROTOCOL). Readers
 * built on it (the RPC stream's raw-byte phases, rpc-reader.ts) use its
 * buffer directly.
 */
export class FrameReader {
  protected chunks: Buffer[] = [];
  protected buffered = 0;
  /** Whole frames cut so far: a connection tells from it whether a frame finished. */
  framesRead = 0;

  constructor(public maxFrame = DEFAULT_MAX_FRAME) {}

  /** Bytes held of frames not yet complete. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  protected append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next whole frame of what is buffered, or null until more bytes come. */
  protected nextFrame(): Frame | null {
    if (this.buffered < PREFIX) return null;
    const len = this.peekLength();
    if (len > this.maxFrame) {
      throw new TrellisError('ERR_PROTOCOL', `frame of ${len} bytes exceeds the maximum of ${this.maxFrame}`);
    }
    if (len < 4) throw new TrellisError('ERR_PROTOCOL', `frame length ${len} is too short`);
    if (this.buffered < PREFIX + len) return null;
    this.framesRead++;
    return decodeBody(this.take(PREFIX + len).subarray(PREFIX));
  }

  private peekLength(): number {
    const first = this.chunks[0];
    if (first.length >= PREFIX) return first.readUInt32LE(0);
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined.readUInt32LE(0);
  }

  /** The first `n` buffered bytes, joined when they span chunks. */
  private take(n: number): Buffer {
    let first = this.chunks[0];
    if (first.length < n) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    this.consume(n);
    return first.subarray(0, n);
  }

  /** Drops `n` bytes of the first chunk. */
  protected consume(n: number): void {
    const first = this.chunks[0];
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
  }
}

/** Frames only (IPC, the fd channel): push chunks, get whole frames; throws ERR_PROTOCOL on a bad frame. */
export class FrameDecoder extends FrameReader {
  push(chunk: Buffer): Frame[] {
    this.append(chunk);
    const frames: Frame[] = [];
    for (let f = this.nextFrame(); f !== null; f = this.nextFrame()) frames.push(f);
    return frames;
  }
}

/** Decodes one frame without its length prefix. */
export function decodeBody(body: Buffer): Frame {
  const hlen = body.readUInt32LE(0);
  if (hlen > body.length - 4) {
    throw new TrellisError('ERR_PROTOCOL', `header length ${hlen} exceeds frame length ${body.length - 4}`);
  }
  let header: unknown;
  try {
    header = JSON.parse(body.toString('utf8', 4, 4 + hlen));
  } catch {
    throw new TrellisError('ERR_PROTOCOL', 'frame header is not valid JSON');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new TrellisError('ERR_PROTOCOL', 'frame header must be a JSON object');
  }
  const t = (header as Record<string, unknown>).t;
  if (typeof t !== 'string') throw new TrellisError('ERR_PROTOCOL', 'frame header lacks a string field "t"');
  return { header: header as Record<string, unknown>, payload: body.subarray(4 + hlen) };
}
