/**
 * How the addon maps a segment (native/segment.cc, issue 12): a read-only
 * mapping (what a reader's gets view) is kept out of V8's external-memory
 * count, so attaching 1 GiB sets off no GC; it is unmapped once its
 * ArrayBuffer is collected; and it cannot be moved to another thread, only
 * copied, so its memory never outlives the object that unmaps it (Node
 * copies a writable one too, as it does any external buffer). Each case runs
 * in a fresh process, as a reader would.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/store.js';

const NATIVE = join(ROOT, 'dist/src/native.js');

/** Runs an ES module snippet (with `native` imported) in `node --expose-gc`; resolves with the JSON it prints. */
function inFreshProcess(code: string): Promise<unknown> {
  const src = `import { native } from ${JSON.stringify(NATIVE)};\n${code}`;
  const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', src], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    child.once('exit', (c) => {
      if (c !== 0) reject(new Error(`child exited with ${c}: ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').pop() ?? 'null'));
    });
  });
}

describe('segment mappings', () => {
  it('mapping 1 GiB segments sets off no GC and adds nothing to the external-memory count', async () => {
    const out = await inFreshProcess(`
      import { PerformanceObserver, constants } from 'node:perf_hooks';
      const GIB = 1024 ** 3;
      const gcs = [];
      const obs = new PerformanceObserver((l) => gcs.push(...l.getEntries()));
      obs.observe({ entryTypes: ['gc'] });
      const keep = [];
      const external = process.memoryUsage().external;
      const t0 = performance.now();
      for (let i = 0; i < 8; i++) {
        const fd = native.memfdCreate('mapping-probe', GIB);
        keep.push(native.map(fd, GIB, false));
        native.closeFd(fd);
      }
      const t1 = performance.now();
      const grew = process.memoryUsage().external - external;
      await new Promise((r) => setTimeout(r, 50));
      obs.disconnect();
      const major = gcs.filter((e) => e.startTime >= t0 && e.detail.kind !== constants.NODE_PERFORMANCE_GC_MINOR);
      console.log(JSON.stringify({ mapped: keep.map((b) => b.byteLength), underOneMiB: grew < 2 ** 20, major: major.length }));
    `);
    expect(out).toEqual({ mapped: Array(8).fill(1024 ** 3), underOneMiB: true, major: 0 });
  });

  it('a mapping goes when its ArrayBuffer is collected, not before', async () => {
    const out = await inFreshProcess(`
      import { readFileSync } from 'node:fs';
      const count = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:unmap-probe')).length;
      const fd = native.memfdCreate('unmap-probe', 1 << 20);
      const kept = new Uint8Array(native.map(fd, 1 << 20, true));
      kept[7] = 42;
      for (let i = 0; i < 50; i++) native.map(fd, 1 << 20, false);
      const before = count();
      for (let i = 0; i < 3; i++) {
        globalThis.gc();
        await new Promise((r) => setImmediate(r));
      }
      console.log(JSON.stringify({ before, after: count(), kept: kept[7] }));
    `);
    expect(out).toEqual({ before: 51, after: 1, kept: 42 });
  });

  it('a transfer to another thread copies a mapping and leaves it in place', async () => {
    const out = await inFreshProcess(`
      import { MessageChannel } from 'node:worker_threads';
      const fd = native.memfdCreate('transfer-probe', 1 << 20);
      const rw = native.map(fd, 1 << 20, true);
      new Uint8Array(rw)[5] = 9;
      const ro = native.map(fd, 1 << 20, false);
      const { port1, port2 } = new MessageChannel();
      const send = (ab) => {
        const got = new Promise((r) => port2.once('message', r));
        port1.postMessage(ab, [ab]);
        return got;
      };
      const roCopy = await send(ro);
      const rwCopy = await send(rw);
      // Written through the shared memory after the transfers: the mappings see it, the copies do not.
      new Uint8Array(rw)[6] = 4;
      port1.close();
      const at = (ab, i) => new Uint8Array(ab)[i];
      console.log(JSON.stringify({
        ro: { left: ro.byteLength, same: roCopy === ro, copied: at(roCopy, 5), later: [at(ro, 6), at(roCopy, 6)] },
        rw: { left: rw.byteLength, same: rwCopy === rw, copied: at(rwCopy, 5), later: [at(rw, 6), at(rwCopy, 6)] },
      }));
    `);
    expect(out).toEqual({
      ro: { left: 1 << 20, same: false, copied: 9, later: [4, 0] },
      rw: { left: 1 << 20, same: false, copied: 9, later: [4, 0] },
    });
  });
});
