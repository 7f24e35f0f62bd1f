/**
 * What all of a store's connections share of request buffering: the bytes of
 * frames that have started to arrive and are not complete yet. Each frame is
 * bounded by the frame limit, but many connections each holding a half-sent
 * frame would otherwise add up without bound (64 × 16 MiB raised a store's
 * RSS by 1 GiB), so the sum is bounded too.
 */
export const DEFAULT_MAX_BUFFERED = 256 * 1024 * 1024;
/** A frame started and not finished within this time closes its connection. */
export const DEFAULT_FRAME_TIMEOUT_MS = 30_000;

export class InputBudget {
  /** Bytes buffered by all connections now. */
  used = 0;

  constructor(
    /** Most bytes all connections together may buffer. */
    readonly limit: number,
    /** How long one frame may take to arrive once its first byte is in. */
    readonly frameTimeoutMs: number,
  ) {}
}
