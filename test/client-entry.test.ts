/**
 * `trellis/client` loads what a reader needs and nothing more (issue 12): a
 * fresh process that imports it, connects and gets a tensor loads neither
 * apache-arrow nor onnxruntime; the Arrow codec comes with the first table,
 * and a table got back is an instance of the Table class the user imported.
 * Every module the child loads is seen by a module.register load hook.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT, runChild, startStore } from './helpers/store.js';

const CLIENT = join(ROOT, 'dist/src/client/index.js');

/** Child code that records the URL of every module it loads into `loaded`. */
const WATCH = `
import { register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const loaded = [];
const { port1, port2 } = new MessageChannel();
port1.on('message', (url) => loaded.push(url));
port1.unref();
const hooks = 'let port; export function initialize(d) { port = d.port; } ' +
  'export async function load(url, context, next) { port.postMessage(url); return next(url, context); }';
register('data:text/javascript,' + encodeURIComponent(hooks), { data: { port: port2 }, transferList: [port2] });
// Messages from the hooks thread arrive asynchronously: a few turns of the loop let them in.
const settle = () => new Promise((r) => setTimeout(r, 100));
const has = (part) => loaded.some((u) => u.includes(part));
`;

describe('trellis/client', () => {
  let stop: (() => Promise<void>) | null = null;
  afterEach(async () => {
    await stop?.();
    stop = null;
  });

  it('a reader of tensors loads neither apache-arrow nor onnxruntime; a table brings the codec, instanceof holds', async () => {
    const env = await startStore({ size: 32 * 1024 * 1024 });
    stop = env.stop;
    const r = await runChild(`
      ${WATCH}
      const client = await import(${JSON.stringify(CLIENT)});
      const c = await client.connect({ socket: ${JSON.stringify(env.socket)} });
      const id = await c.put(new Float32Array([1, 2, 3]));
      const t = await c.get(id);
      await settle();
      const reader = { arrow: has('/apache-arrow/'), onnx: has('onnxruntime'), loaders: has('/dist/src/loaders/'), data: [...t.data] };
      const arrow = await import('apache-arrow');
      const table = arrow.tableFromArrays({ x: new Int32Array([4, 5]) });
      const tid = await c.put(table);
      const back = await c.get(tid);
      const viaIpc = { isTable: back instanceof arrow.Table, x: [...back.getChild('x').toArray()] };
      await c.close();
      console.log(JSON.stringify({ reader, viaIpc }));
    `);
    expect({ code: r.code, json: r.json, stderr: r.stderr }).toEqual({
      code: 0,
      json: {
        reader: { arrow: false, onnx: false, loaders: false, data: [1, 2, 3] },
        viaIpc: { isTable: true, x: [4, 5] },
      },
      stderr: '',
    });
  });

  it('a table put by another process is got back as a Table in a fresh one that never imported the codec', async () => {
    const env = await startStore({ size: 32 * 1024 * 1024 });
    stop = env.stop;
    const put = await runChild(`
      const arrow = await import('apache-arrow');
      const c = await connect({ socket: ${JSON.stringify(env.socket)} });
      const id = await c.put(arrow.tableFromArrays({ y: new Float64Array([0.5, 1.5]) }));
      await c.close();
      console.log(JSON.stringify({ id }));
    `);
    const { id } = put.json as { id: string };
    const r = await runChild(`
      ${WATCH}
      const client = await import(${JSON.stringify(CLIENT)});
      const c = await client.connect({ socket: ${JSON.stringify(env.socket)} });
      await settle();
      const before = has('/apache-arrow/');
      const back = await c.get(${JSON.stringify(id)});
      const arrow = await import('apache-arrow');
      console.log(JSON.stringify({ before, isTable: back instanceof arrow.Table, y: [...back.getChild('y').toArray()] }));
      await c.close();
    `);
    expect({ code: r.code, json: r.json, stderr: r.stderr }).toEqual({
      code: 0,
      json: { before: false, isTable: true, y: [0.5, 1.5] },
      stderr: '',
    });
  });
});
