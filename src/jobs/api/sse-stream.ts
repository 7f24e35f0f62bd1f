/**
 * One server-sent event stream on a hijacked fastify reply: the headers, a
 * heartbeat comment every 15 s, writes that wait for the socket to drain, and
 * an AbortSignal that fires when the client goes away or the API closes
 * (`live` holds every open stream so closing does not wait on clients).
 * The job events route and the dashboard stream both write through it.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { encodeSse, SSE_HEARTBEAT, type SseMessage } from './sse.js';

/** A comment every 15 s: proxies commonly close a response that is silent for 30-60 s. */
const HEARTBEAT_MS = 15_000;

export interface SseStream {
  /** Fires when the client went away or the API is closing. */
  readonly signal: AbortSignal;
  /** Writes one event; resolves once the socket can take more (or the stream was aborted). */
  send(m: SseMessage): Promise<void>;
  /** Ends the response; safe to call twice. */
  end(): void;
}

function drained(res: FastifyReply['raw'], signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    signal.addEventListener('abort', done);
  });
}

export function openSseStream(request: FastifyRequest, reply: FastifyReply, live: Set<AbortController>): SseStream {
  const ac = new AbortController();
  live.add(ac);
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    // A stream is not worth keeping the connection for, and closing lets the server shut down promptly.
    connection: 'close',
    'x-accel-buffering': 'no',
    'x-request-id': request.id,
  });
  const onClose = () => ac.abort();
  res.on('close', onClose);
  const heartbeat = setInterval(() => res.write(SSE_HEARTBEAT), HEARTBEAT_MS);
  let ended = false;
  return {
    signal: ac.signal,
    async send(m) {
      if (ended || ac.signal.aborted) return;
      if (!res.write(encodeSse(m))) await drained(res, ac.signal);
    },
    end() {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      res.off('close', onClose);
      live.delete(ac);
      res.end();
    },
  };
}
