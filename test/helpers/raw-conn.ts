/**
 * A raw connection to a store's socket (IPC) or RPC port: the test writes
 * whatever bytes it likes and sees every frame the store answers, and whether
 * it closed. Also the raw frame builders and the runner of one bad input,
 * shared by the hostile-client tests of both protocols.
 */
import { connect, type Socket } from 'node:net';
import { encodeFrame, type Frame, FrameDecoder } from '../../dist/src/protocol/frame.js';
import { PROTOCOL_VERSION } from '../../dist/src/protocol/messages.js';

export class RawConn {
  readonly frames: Frame['header'][] = [];
  readonly payloads: Buffer[] = [];
  /** Resolves when the store closed the connection (or it failed). */
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder(1 << 30);
  private readonly listeners = new Set<() => void>();
  private isClosed = false;
  decodeError: Error | null = null;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of this.decoder.push(chunk)) {
          this.frames.push(f.header);
          this.payloads.push(f.payload);
        }
      } catch (e) {
        this.decodeError = e as Error;
        socket.destroy();
      }
      this.notify();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        this.notify();
        resolve();
      }),
    );
  }

  /** A UNIX socket path, or a TCP endpoint (an RPC port). */
  static open(target: string | { host: string; port: number }): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = typeof target === 'string' ? connect(target) : connect(target.port, target.host);
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(new RawConn(s));
      });
      s.once('error', reject);
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  write(bytes: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Sends a frame; returns the answer with the same rid (or a rid-0 error), or null if the store closed first. */
  async request(header: Record<string, unknown>, payload?: Uint8Array): Promise<Frame['header'] | null> {
    const rid = typeof header.rid === 'number' ? header.rid : 1 + Math.floor(Math.random() * 1e9);
    const seen = this.frames.length;
    this.write(encodeFrame({ ...header, rid }, payload));
    return this.waitFor((f) => f.rid === rid || (f.t === 'err' && f.rid === 0), seen);
  }

  hello(version = PROTOCOL_VERSION): Promise<Frame['header'] | null> {
    return this.request({ t: 'hello', version, client: 'raw test connection' });
  }

  /** The first frame from index `from` on that matches, or null once the connection closed without one. */
  waitFor(match: (f: Frame['header']) => boolean, from = 0): Promise<Frame['header'] | null> {
    return new Promise((resolve) => {
      const check = () => {
        for (let i = from; i < this.frames.length; i++) {
          if (match(this.frames[i])) {
            this.listeners.delete(check);
            resolve(this.frames[i]);
            return;
          }
        }
        if (this.isClosed) {
          this.listeners.delete(check);
          resolve(null);
        }
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Half-closes our side: a well-behaved store then closes too. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}

/** Whether a connection ended up closed by the store or still open. */
export type After = 'closed' | 'open';

/** Waits for the store to close, up to a bound that only guards against hanging. */
export async function closedWithin(c: RawConn, ms: number): Promise<After> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    c.closed.then(() => 'closed' as const),
    new Promise<'open'>((resolve) => {
      t = setTimeout(() => resolve('open'), ms);
    }),
  ]);
  clearTimeout(t);
  return r;
}

/** A little-endian u32, as frame lengths are written. */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

/** A frame whose header bytes are given raw (they need not be JSON). */
export function rawFrame(header: Buffer | string, payload = Buffer.alloc(0)): Buffer {
  const h = typeof header === 'string' ? Buffer.from(header) : header;
  return Buffer.concat([u32(4 + h.length + payload.length), u32(h.length), h, payload]);
}

/** One kind of bad input, and what the store must answer to it. */
export interface BadInput {
  name: string;
  /** Do the handshake first (the bad input then comes from an accepted client). */
  afterHello?: boolean;
  /** Bytes to send; `end` half-closes our side afterwards (for inputs that leave the store waiting). */
  send: () => Buffer | Promise<Buffer>;
  end?: boolean;
  /** Acceptable codes of the store's first answer ('none' when it closes without one, 'ok' for success). */
  codes: string[];
  after: After;
}

export interface Observed {
  name: string;
  code: string;
  after: After;
}

/**
 * Sends one bad input on a fresh connection (after `hello` when it asks for a handshake) and observes
 * the store's first answer and whether it then closed, or still answers a status on that connection.
 */
export async function runBadInput(
  open: () => Promise<RawConn>,
  hello: (c: RawConn) => Promise<Frame['header'] | null>,
  k: BadInput,
): Promise<Observed> {
  const c = await open();
  try {
    if (k.afterHello) {
      const h = await hello(c);
      if (h?.t !== 'ok') return { name: k.name, code: `handshake failed: ${JSON.stringify(h)}`, after: 'closed' };
    }
    const from = c.frames.length;
    c.write(await k.send());
    if (k.end) c.end();
    const first = await c.waitFor(() => true, from);
    const code = first === null ? 'none' : first.t === 'err' ? String(first.code) : String(first.t);
    let after: After;
    if (k.after === 'closed') {
      after = await closedWithin(c, 5000);
    } else {
      // Still serving: a status on the same connection is answered, by its own rid (a refused frame
      // with no valid rid is answered with rid 0, which must not count).
      const seen = c.frames.length;
      c.write(encodeFrame({ t: 'status', rid: 424_242 }));
      const r = c.isOpen ? await c.waitFor((f) => f.rid === 424_242, seen) : null;
      after = r?.t === 'ok' ? 'open' : 'closed';
    }
    return { name: k.name, code, after };
  } finally {
    c.destroy();
  }
}
