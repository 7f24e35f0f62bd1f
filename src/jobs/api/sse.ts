/**
 * Server-sent events, both sides: the encoder the API writes with and the
 * parser the client reads with (the WHATWG "event stream" format: `field:
 * value` lines, a blank line ends an event, `:` starts a comment).
 */
import { TrellisError } from '../../errors.js';

export interface SseMessage {
  /** The `id:` field; undefined when the event had none. */
  id?: string;
  /** The `event:` field; `message` when absent, as browsers do. */
  event: string;
  data: string;
}

/** One event as text. Ids and names must be single lines: they come from the engine, so a bad one is a bug. */
export function encodeSse(m: SseMessage): string {
  for (const [field, v] of [
    ['id', m.id],
    ['event', m.event],
  ] as const) {
    if (v !== undefined && /[\r\n\0]/.test(v)) {
      throw new TrellisError('ERR_INTERNAL', `an SSE ${field} must be one line, got ${JSON.stringify(v)}`);
    }
  }
  let out = m.id === undefined ? '' : `id: ${m.id}\n`;
  out += `event: ${m.event}\n`;
  for (const line of m.data.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  return `${out}\n`;
}

/** A comment line: ignored by parsers, it keeps proxies from closing an idle stream. */
export const SSE_HEARTBEAT = ': keep-alive\n\n';

/** Feed it text as it arrives; it returns the events completed so far. */
export class SseParser {
  private buf = '';
  private data: string[] = [];
  private event = '';
  private id: string | undefined;
  private sawId = false;

  push(chunk: string): SseMessage[] {
    this.buf += chunk;
    const out: SseMessage[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      // A lone '\r' at the end may be the first half of '\r\n': wait for more.
      if (!m || (m[0] === '\r' && m.index === this.buf.length - 1)) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  private line(line: string): SseMessage | undefined {
    if (line === '') {
      const ev =
        this.data.length > 0
          ? { ...(this.sawId ? { id: this.id } : {}), event: this.event || 'message', data: this.data.join('\n') }
          : undefined;
      this.data = [];
      this.event = '';
      this.sawId = false;
      return ev;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) {
      this.id = value;
      this.sawId = true;
    }
    return undefined;
  }
}
