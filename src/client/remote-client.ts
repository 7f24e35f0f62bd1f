/**
 * A client for a store on another machine, over TCP: the same interface as
 * the IPC client (StoreClient), with copies instead of shared memory.
 *
 * `get` copies: each blob's bytes are read from the socket straight into a
 * fresh, 64-byte aligned ArrayBuffer that belongs to the caller (a tensor's
 * data is a TypedArray over it, an Arrow table is rebuilt over it). The
 * values stay valid for as long as the caller keeps them; `release` only
 * checks that the caller got the id (so code correct over IPC is correct
 * here, and the reverse). `put` sends the value's own bytes as raw bytes
 * after the request header, without staging them, so the value must not
 * change until `put` resolves.
 *
 * `createBlob`, `createTensor` and `getSync` need shared memory and fail
 * with ERR_UNSUPPORTED.
 *
 * @example
 *   await using client = await connect({ rpc: '10.0.0.2:7000', token });
 *   const id = await client.put(new Float32Array([1, 2, 3]));
 *   const t = (await client.get(id)) as Tensor; // t.data is a copy
 */

import { decodeNeedsArrow, loadArrowCodec } from '../codecs/arrow-loader.js';
import type { EncodedValue } from '../codecs/codec.js';
import type { ArrayOf, DType } from '../codecs/tensor.js';
import { decodeRecord, type StoreValue } from '../codecs/value.js';
import { invalidParameter, TrellisError } from '../errors.js';
import { native } from '../native.js';
import { MAX_TIMEOUT_MS } from '../protocol/fields.js';
import { isObjectId } from '../protocol/messages.js';
import type { ObjectRecord } from '../protocol/records.js';
import {
  decodeGetAnswer,
  decodeReadAnswer,
  decodeRpcReply,
  MAX_RAW_PART,
  type RpcGetAnswer,
  type RpcReadReply,
  type RpcRequestBody,
} from '../protocol/rpc-messages.js';
import { loadTls, type TlsFiles } from '../tls-config.js';
import type { BlobWriter, TensorWriter } from './client.js';
import { ClientCommon, type PutOptions, putFields } from './client-common.js';
import { type RequestOptions, type RpcAnswer, RpcChannel } from './rpc-channel.js';
import type { StoreClient } from './store-client.js';

export interface ReadOptions {
  /** Where in the object's blob the range starts (default 0). */
  offset?: number;
  /** Wait for the tag to be bound, instead of ERR_NAME_NOT_FOUND (default false). */
  wait?: boolean;
  /** With wait: ERR_TIMEOUT after this long (default 0: no limit). */
  timeoutMs?: number;
  /** Called when the answer begins to arrive (its bytes follow): splits waiting from transfer in timings. */
  onStart?: () => void;
}

export interface RemoteConnectOptions {
  /** The store's RPC endpoint, 'host:port' ('[v6addr]:port' for IPv6). */
  rpc: string;
  /** The shared token (default $TRELLIS_TOKEN). */
  token?: string;
  /** Label for this client in the store's logs. */
  name?: string;
  /** Connect and handshake timeout (default 10 s). */
  timeoutMs?: number;
  /** A request that sees no byte from the store for this long fails with ERR_TIMEOUT (default 60 s). */
  idleTimeoutMs?: number;
  /** Local address to connect from. */
  localAddress?: string;
  /**
   * Speak TLS to a store serving it: `ca` is the PEM file its certificate must
   * chain to; `cert` and `key` are presented when the store wants client
   * certificates (mutual TLS). Unreadable or unusable files: ERR_TLS_CONFIG.
   */
  tls?: TlsFiles;
}

const ALIGN = 64;

/** Parses 'host:port' and '[v6]:port'. */
export function parseEndpoint(s: unknown): { host: string; port: number } {
  const m = typeof s === 'string' ? /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s) : null;
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port < 1 || port > 65535) throw invalidParameter('rpc', "an endpoint 'host:port'", s);
  return { host: m[1] ?? m[2], port };
}

/** Largest ArrayBuffer Node 20 holds safely. */
const MAX_BUFFER = 4 * 1024 ** 3;

/**
 * A zeroed buffer of `size` bytes whose first byte sits on a 64-byte boundary
 * (a blob within 64 bytes of the 4 GiB limit gets the allocator's alignment,
 * 16 bytes, which every TypedArray and Arrow view still accepts).
 */
function alignedBuffer(size: number): Uint8Array {
  const padded = size + ALIGN <= MAX_BUFFER;
  let ab: ArrayBuffer;
  try {
    ab = new ArrayBuffer(padded ? size + ALIGN : size);
  } catch (e) {
    throw new TrellisError('ERR_OUT_OF_MEMORY', `cannot allocate ${size} bytes for a blob in this process`, {
      cause: e,
    });
  }
  if (!padded) return new Uint8Array(ab);
  const addr = Number(native.address(ab) % BigInt(ALIGN));
  return new Uint8Array(ab, (ALIGN - addr) % ALIGN, size);
}

function unsupported(what: string): TrellisError {
  return new TrellisError(
    'ERR_UNSUPPORTED',
    `${what} writes or reads the store's shared memory, which a remote (RPC) client cannot map; ` +
      'use put / get, or connect over the store socket on its node',
  );
}

export class RemoteClient extends ClientCommon implements StoreClient {
  /** Gets not yet released, per id: release() checks against it. */
  private readonly held = new Map<string, number>();
  /** This client speaks to its store over TCP (copies, no shared memory). */
  readonly transport = 'rpc' as const;

  private constructor(
    private readonly channel: RpcChannel,
    /** The endpoint this client talks to, 'host:port'. */
    readonly endpoint: string,
    readonly storeId: string,
    readonly instanceId: number,
  ) {
    super();
  }

  /** @internal use connect({ rpc, token }) */
  static async open(opts: RemoteConnectOptions): Promise<RemoteClient> {
    const { host, port } = parseEndpoint(opts?.rpc);
    const token = opts.token ?? process.env.TRELLIS_TOKEN;
    if (typeof token !== 'string' || token.length === 0) {
      throw new TrellisError('ERR_UNAUTHORIZED', 'an RPC client needs the token (the token option or $TRELLIS_TOKEN)');
    }
    const tls = opts.tls === undefined ? undefined : loadTls(opts.tls, 'client');
    const channel = await RpcChannel.open({
      host,
      port,
      token,
      client: opts.name ?? `pid ${process.pid}`,
      timeoutMs: opts.timeoutMs,
      idleTimeoutMs: opts.idleTimeoutMs,
      localAddress: opts.localAddress,
      ...(tls ? { tls } : {}),
    });
    return new RemoteClient(channel, `${host}:${port}`, channel.hello.storeId, channel.hello.instanceId);
  }

  // ---- put ----------------------------------------------------------------

  protected async putEncoded(enc: EncodedValue, opts: PutOptions): Promise<string> {
    const fields = putFields(opts);
    if (enc.size > MAX_RAW_PART) {
      throw new TrellisError(
        'ERR_BAD_REQUEST',
        `a value of ${enc.size} bytes exceeds one blob (${MAX_RAW_PART} bytes); put its parts and putObject over them`,
      );
    }
    let bytes = enc.contiguous;
    if (!bytes) {
      // (Arrow tables: the codec lays every buffer out at its aligned offset)
      bytes = new Uint8Array(enc.size);
      enc.write(bytes);
    }
    const a = await this.call(
      { t: 'put', object: { typename: enc.typename, meta: enc.meta, members: [] }, ...fields },
      { raw: [bytes] },
    );
    return decodeRpcReply('put', a.header).id;
  }

  /** Not over RPC: the blob would have to be shared memory. */
  async createBlob(nbytes: number): Promise<BlobWriter> {
    this.checkOpen();
    void nbytes;
    throw unsupported('createBlob');
  }

  /** Not over RPC: the tensor would have to be shared memory. */
  async createTensor<D extends DType>(dtype: D, shape: number[]): Promise<TensorWriter<ArrayOf<D>>> {
    this.checkOpen();
    void dtype;
    void shape;
    throw unsupported('createTensor');
  }

  // ---- get ----------------------------------------------------------------

  /** Copies of many objects in one round trip. */
  async getMany(ids: string[]): Promise<StoreValue[]> {
    if (!Array.isArray(ids)) throw invalidParameter('ids', 'an array of object ids', ids);
    for (const id of ids) if (!isObjectId(id)) throw invalidParameter('id', 'an object id', id);
    this.checkOpen();
    if (ids.length === 0) return [];
    let answer: RpcGetAnswer | null = null;
    const a = await this.call(
      { t: 'get', ids },
      {
        alloc: (h, sizes) => {
          answer = decodeGetAnswer(h, ids);
          return sizes.map(alignedBuffer);
        },
      },
    );
    answer ??= decodeGetAnswer(a.header, ids);
    const bytes = new Map<string, Uint8Array>();
    answer.blobs.forEach((id, i) => {
      bytes.set(id, a.parts[i]);
    });
    const resolve = (rec: ObjectRecord): Uint8Array => {
      const b = bytes.get(rec.id);
      if (!b) throw new TrellisError('ERR_PROTOCOL', `blob ${rec.id} came without its bytes`);
      return b;
    };
    if (decodeNeedsArrow(answer.objects)) await loadArrowCodec();
    const values = answer.objects.map((tree: ObjectRecord) => decodeRecord(tree, resolve));
    for (const id of ids) this.held.set(id, (this.held.get(id) ?? 0) + 1);
    return values;
  }

  /**
   * Reads `into.byteLength` bytes at `opts.offset` of the blob of the object
   * tagged `tag` in this store (a Blob, or an object of one blob such as a
   * Tensor; see SealOptions.tag), straight from the socket into `into`: no
   * staging copy, so `into` may be a writable arena view of the caller's own
   * store. With `wait`, the answer comes when the tag is bound; the request
   * then sits in the store and costs nothing until it does. A complete read
   * counts against the tag's `reads`.
   *
   * @example
   *   const chunk = new Float32Array(1024);
   *   await peer.read('job1/rank2/step7', new Uint8Array(chunk.buffer), { offset: 4096, wait: true });
   */
  async read(tag: string, into: Uint8Array, opts: ReadOptions = {}): Promise<RpcReadReply> {
    if (typeof tag !== 'string' || tag.length === 0 || tag.length > 1024) {
      throw invalidParameter('tag', 'a string of 1 to 1024 characters', tag);
    }
    if (!(into instanceof Uint8Array)) throw invalidParameter('into', 'a Uint8Array', into);
    const offset = opts.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw invalidParameter('offset', 'a byte offset', offset);
    const wait = opts.wait ?? false;
    if (typeof wait !== 'boolean') throw invalidParameter('wait', 'a boolean', wait);
    const timeoutMs = opts.timeoutMs ?? 0;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_TIMEOUT_MS) {
      throw invalidParameter('timeoutMs', `milliseconds in [0, ${MAX_TIMEOUT_MS}]`, timeoutMs);
    }
    const length = into.byteLength;
    let reply: RpcReadReply | null = null;
    const a = await this.call(
      { t: 'read', tag, offset, length, wait, timeoutMs },
      {
        waits: wait,
        alloc: (h) => {
          reply = decodeReadAnswer(h, offset, length);
          opts.onStart?.();
          return [into];
        },
      },
    );
    // An answer without raw bytes never reaches alloc: checking it refuses it.
    return reply ?? decodeReadAnswer(a.header, offset, length);
  }

  /** Not over RPC: there is no shared memory to view without a round trip. */
  getSync(id: string): StoreValue | undefined {
    this.checkOpen();
    void id;
    throw unsupported('getSync');
  }

  /**
   * Gives back one get. Over RPC the copy is the caller's and nothing is held
   * in the store, so this only checks the id was got (ERR_NOT_REFERENCED otherwise).
   */
  async release(id: string): Promise<void> {
    this.checkOpen();
    const n = this.held.get(id);
    if (n === undefined) throw new TrellisError('ERR_NOT_REFERENCED', `this client holds no reference to ${id}`);
    if (n > 1) this.held.set(id, n - 1);
    else this.held.delete(id);
  }

  /** Number of gets not yet released. */
  get heldCount(): number {
    return this.held.size;
  }

  // ---- lifetime ---------------------------------------------------------------

  protected disconnect(): void {
    this.held.clear();
    this.channel.close();
  }

  private call(body: RpcRequestBody, opts?: RequestOptions): Promise<RpcAnswer> {
    this.checkOpen();
    return this.channel.request(body, opts);
  }

  protected send(body: RpcRequestBody, waits = false): Promise<RpcAnswer> {
    return this.channel.request(body, { waits });
  }
}
