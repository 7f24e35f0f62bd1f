/**
 * The SSE encoder and parser (src/jobs/api/sse.ts), both sides of the event
 * stream: what one writes the other reads back, however the bytes are cut.
 */
import { describe, expect, it } from 'vitest';
import { encodeSse, SSE_HEARTBEAT, type SseMessage, SseParser } from '../dist/src/jobs/api/sse.js';
import { errCode } from './helpers/child.js';

const messages: SseMessage[] = [
  { id: '1', event: 'state', data: '{"state":"queued"}' },
  { id: '1700000000000-0', event: 'log', data: '{"line":"a: b"}' },
  { event: 'error', data: '{"code":"ERR_INTERNAL","message":"m"}' },
  { id: '3', event: 'log', data: 'two\nlines' },
];

describe('SSE', () => {
  it('encodes as id/event/data lines and parses back, the text cut at every byte', () => {
    const text = messages.map(encodeSse).join(SSE_HEARTBEAT);
    expect(encodeSse(messages[0]!)).toBe('id: 1\nevent: state\ndata: {"state":"queued"}\n\n');
    expect(encodeSse(messages[3]!)).toBe('id: 3\nevent: log\ndata: two\ndata: lines\n\n');
    expect(new SseParser().push(text)).toEqual(messages);
    for (let cut = 1; cut < text.length; cut++) {
      const p = new SseParser();
      expect([cut, [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))]]).toEqual([cut, messages]);
    }
  });

  it('reads CRLF and CR line ends, fields without a space, and names a nameless event message', () => {
    const p = new SseParser();
    expect(p.push('id:7\r\nevent:state\r\ndata:{}\r\n\r')).toEqual([]);
    expect(p.push('\ndata: x\r\rdata\n\n')).toEqual([
      { id: '7', event: 'state', data: '{}' },
      { event: 'message', data: 'x' },
      { event: 'message', data: '' },
    ]);
  });

  it('ignores comments, unknown fields, and events with no data', () => {
    expect(new SseParser().push(': hi\nretry: 5\nid: 4\n\nfoo: bar\ndata: y\n\n')).toEqual([
      { event: 'message', data: 'y' },
    ]);
  });

  it('refuses to write an id or event name that spans lines (ERR_INTERNAL)', async () => {
    expect(await errCode(() => encodeSse({ id: 'a\nb', event: 'log', data: '' }))).toBe('ERR_INTERNAL');
    expect(await errCode(() => encodeSse({ event: 'log\r', data: '' }))).toBe('ERR_INTERNAL');
  });
});
