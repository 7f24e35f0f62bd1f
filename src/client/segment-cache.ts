/**
 * Segment mappings, shared by every client in a process: each segment of each
 * store is mapped at most once read-only and at most once read-write, because
 * creating a large external ArrayBuffer costs about a millisecond and a view
 * over an existing one about 25 ns. Mappings live as long as the process holds
 * any view over them (the ArrayBuffer finalizer unmaps).
 */
import { TrellisError } from '../errors.js';
import { native } from '../native.js';
import { decodeBody, encodeFrame } from '../protocol/frame.js';
import type { SegmentInfo } from '../protocol/messages.js';

export interface SegmentMapping {
  readonly id: number;
  readonly size: number;
  readonly fd: number;
  readonly ro: ArrayBuffer;
  rw: ArrayBuffer | null;
}

const stores = new Map<string, Map<number, SegmentMapping>>();
const inflight = new Map<string, Promise<void>>();

export function mappingOf(storeId: string, seg: number): SegmentMapping | undefined {
  return stores.get(storeId)?.get(seg);
}

/** Maps every listed segment not yet mapped, asking the store for their fds over the fd channel. */
export async function ensureMapped(storeId: string, socketPath: string, token: string, segs: number[]): Promise<void> {
  let known = stores.get(storeId);
  if (!known) {
    known = new Map();
    stores.set(storeId, known);
  }
  const waits: Promise<void>[] = [];
  const missing: number[] = [];
  for (const s of segs) {
    if (known.has(s)) continue;
    const key = `${storeId}:${s}`;
    const p = inflight.get(key);
    if (p) waits.push(p);
    else if (!missing.includes(s)) missing.push(s);
  }
  if (missing.length > 0) {
    const job = fetchSegments(known, socketPath, token, missing);
    for (const s of missing) inflight.set(`${storeId}:${s}`, job);
    waits.push(
      job.finally(() => {
        for (const s of missing) inflight.delete(`${storeId}:${s}`);
      }),
    );
  }
  await Promise.all(waits);
}

async function fetchSegments(
  known: Map<number, SegmentMapping>,
  socketPath: string,
  token: string,
  segs: number[],
): Promise<void> {
  const req = encodeFrame({ t: 'fds', rid: 0, token, segments: segs });
  const { data, fds } = await native.requestFds(socketPath, req, 10_000);
  try {
    const { header } = decodeBody(data);
    if (header.t === 'err') {
      throw TrellisError.fromPayload(header as { code: string; message: string });
    }
    const infos = header.segments as SegmentInfo[];
    if (!Array.isArray(infos) || infos.length !== fds.length) {
      throw new TrellisError('ERR_PROTOCOL', `fd channel sent ${fds.length} fds for ${infos?.length} segments`);
    }
    infos.forEach((info, i) => {
      const fd = fds[i];
      const actual = native.fdSize(fd);
      if (actual !== info.size) {
        throw new TrellisError('ERR_PROTOCOL', `segment ${info.id} is ${actual} bytes, the store said ${info.size}`);
      }
      const ro = native.map(fd, info.size, false);
      known.set(info.id, { id: info.id, size: info.size, fd, ro, rw: null });
      fds[i] = -1;
    });
  } finally {
    for (const fd of fds) if (fd >= 0) native.closeFd(fd);
  }
}

/** The read-write mapping of a segment, created on first use by a producer. */
export function writableMapping(m: SegmentMapping): ArrayBuffer {
  if (!m.rw) m.rw = native.map(m.fd, m.size, true);
  return m.rw;
}

/** Number of segments this process has mapped, for diagnostics. */
export function mappedSegmentCount(): number {
  let n = 0;
  for (const m of stores.values()) n += m.size;
  return n;
}
