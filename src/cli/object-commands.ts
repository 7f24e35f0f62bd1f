/**
 * `trellis put`, `get`, `ls` and `rm`: a store's objects and names for people
 * at a terminal and for scripts (--json). Files go straight between disk and
 * store memory: put reads the file into a blob allocated in the arena, get
 * writes the arena's own bytes to the file; neither holds the data in the JS
 * heap. A .npy file is put as a Tensor (dtype and shape from its header) and
 * a Tensor is got as a .npy file, so the two round-trip.
 */
import { open } from 'node:fs/promises';
import { Command, Option } from 'commander';
import type { TrellisClient } from '../client/client.js';
import { connect } from '../client/connect.js';
import { copyOn } from '../client/shard-copies.js';
import { isTensorLike, type Tensor } from '../codecs/tensor.js';
import { TrellisError } from '../errors.js';
import { openBytes } from '../ingest/byte-source.js';
import { swapBytes } from '../ingest/ingest-source.js';
import { npyHeader, readNpyHeader } from '../ingest/npy.js';
import { isObjectId } from '../protocol/messages.js';
import type { ObjectSummary } from '../protocol/records.js';
import { DATASET_TYPENAME } from '../store/cluster.js';
import { reported, usageExit } from './exit-codes.js';
import { progressBar } from './progress.js';
import { formatSize } from './size.js';
import { textTable } from './text-table.js';

const socketOption = () =>
  new Option('--socket <path>', "the store's UNIX socket (default: $TRELLIS_SOCKET or /tmp/trellis.sock)");

async function withClient<T>(
  socket: string | undefined,
  name: string,
  fn: (c: TrellisClient) => Promise<T>,
): Promise<T> {
  const c = await connect({ socket, name });
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

async function resolveId(c: TrellisClient, nameOrId: string): Promise<string> {
  return isObjectId(nameOrId) ? nameOrId : c.getName(nameOrId);
}

async function putFile(
  c: TrellisClient,
  path: string,
  as: 'blob' | 'tensor',
  name: string | undefined,
  persist: boolean,
) {
  // A Blob is the file's bytes as they are; a gzipped .npy is inflated on the way.
  const src = await openBytes(path, { inflate: as === 'tensor' });
  try {
    let w: {
      buffer: Uint8Array;
      seal(o: { name?: string; persist?: boolean }): Promise<string>;
      abort(): Promise<void>;
    };
    let after = (_b: Uint8Array) => {};
    let typename: string;
    if (as === 'tensor') {
      const h = await readNpyHeader(src);
      const t = await c.createTensor(h.dtype, h.shape);
      w = {
        buffer: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
        seal: (o) => t.seal(o),
        abort: () => t.abort(),
      };
      if (h.bigEndian) after = (b) => swapBytes(b, h.itemsize);
      typename = 'Tensor';
    } else {
      const b = await c.createBlob(src.fileSize);
      w = { buffer: b.buffer, seal: (o) => b.seal(o), abort: () => b.abort() };
      typename = 'Blob';
    }
    const bar = await progressBar(`put ${name ?? path}`, w.buffer.byteLength);
    try {
      let done = 0;
      await src.readInto(w.buffer, (n) => {
        done += n;
        bar.update(done, w.buffer.byteLength);
      });
      after(w.buffer);
      const id = await w.seal({ name, persist });
      return { id, name, typename, nbytes: w.buffer.byteLength };
    } catch (e) {
      await w.abort().catch(() => {});
      throw e;
    } finally {
      bar.stop();
    }
  } finally {
    await src.close();
  }
}

/** Writes `parts` to `out` (a path, or stdout for '-'), straight from where they lie. */
async function writeOut(out: string, parts: Uint8Array[]): Promise<void> {
  if (out === '-') {
    for (const p of parts) {
      await new Promise<void>((resolve, reject) => process.stdout.write(p, (e) => (e ? reject(e) : resolve())));
    }
    return;
  }
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(out, 'w');
  } catch (e) {
    throw new TrellisError('ERR_FILE_UNREADABLE', `cannot write ${out}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  try {
    for (const p of parts) {
      let off = 0;
      while (off < p.byteLength)
        off += (await fh.write(p, off, Math.min(p.byteLength - off, 64 * 1024 * 1024))).bytesWritten;
    }
  } finally {
    await fh.close();
  }
}

export function objectCommands(): Command[] {
  const put = new Command('put')
    .exitOverride(usageExit)
    .description('store a file: a .npy as a Tensor (dtype and shape kept), anything else as a Blob of its bytes')
    .argument('<file>')
    .option('--name <name>', 'bind this name to the new object')
    .addOption(new Option('--as <kind>', 'store as (default: tensor for .npy, else blob)').choices(['blob', 'tensor']))
    .option('--persist', 'publish the object cluster-wide')
    .addOption(socketOption())
    .option('--json', 'print { id, name, typename, nbytes } as JSON')
    .action(
      reported(
        async (
          file: string,
          o: { name?: string; as?: 'blob' | 'tensor'; persist?: boolean; socket?: string; json?: boolean },
        ) => {
          const as = o.as ?? (file.toLowerCase().endsWith('.npy') ? 'tensor' : 'blob');
          const r = await withClient(o.socket, 'trellis put', (c) => putFile(c, file, as, o.name, Boolean(o.persist)));
          process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${r.id}\n`);
        },
      ),
    );

  const get = new Command('get')
    .exitOverride(usageExit)
    .description(
      "write an object's bytes to a file (stdout without --out): a Tensor as .npy (or its raw data with --raw), a Blob as it is",
    )
    .argument('<name-or-id>')
    .option('--out <file>', 'file to write (- for stdout)', '-')
    .option('--raw', "a Tensor's data only, without the .npy header")
    .addOption(socketOption())
    .action(
      reported(async (what: string, o: { out: string; raw?: boolean; socket?: string }) => {
        await withClient(o.socket, 'trellis get', async (c) => {
          const id = await resolveId(c, what);
          const v = await c.get(id);
          try {
            let parts: Uint8Array[];
            if (v instanceof Uint8Array) parts = [v];
            else if (isTensorLike(v)) {
              const t = v as Tensor;
              const data = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
              parts = o.raw ? [data] : [npyHeader(t.dtype, t.shape), data];
            } else {
              const typename = (v as { typename?: string }).typename ?? 'ArrowTable';
              throw new TrellisError(
                'ERR_UNSUPPORTED',
                `${what} is a ${typename}; get writes Tensors and Blobs (read datasets with the loader, or ls to see their shards)`,
              );
            }
            await writeOut(o.out, parts);
          } finally {
            await c.release(id);
          }
        });
      }),
    );

  const ls = new Command('ls')
    .exitOverride(usageExit)
    .description("list the store's names (with --objects, every object) with type and size")
    .option('--prefix <prefix>', 'only names starting with this', '')
    .option('--objects', 'list objects (blobs, tensors, shards...) instead of names')
    .addOption(socketOption())
    .option('--json', 'print the listing as a JSON array')
    .action(
      reported(async (o: { prefix: string; objects?: boolean; socket?: string; json?: boolean }) => {
        await withClient(o.socket, 'trellis ls', async (c) => {
          const objects = await c.list();
          if (o.objects) {
            const rows = objects.map((s) => ({
              id: s.id,
              typename: s.typename,
              nbytes: s.nbytes,
              references: s.references,
              spilled: s.spilled,
            }));
            process.stdout.write(
              o.json
                ? `${JSON.stringify(rows, null, 2)}\n`
                : rows.length === 0
                  ? 'no objects\n'
                  : `${textTable([
                      ['ID', 'TYPE', 'SIZE', 'REFS'],
                      ...rows.map((r) => [r.id, r.typename, formatSize(r.nbytes), String(r.references)]),
                    ])}\n`,
            );
            return;
          }
          const byId = new Map<string, ObjectSummary>(objects.map((s) => [s.id, s]));
          const names = await c.listNames(o.prefix);
          const rows = await Promise.all(
            Object.entries(names)
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
              .map(async ([name, id]) => {
                const s = byId.get(id);
                if (s) return { name, id, typename: s.typename, nbytes: s.nbytes };
                // Not a local object: a dataset (a cluster-wide record) or an object on another store.
                const loc = await c.locate(id).catch(() => undefined);
                return { name, id, typename: loc?.typename ?? 'remote', nbytes: loc?.nbytes ?? 0 };
              }),
          );
          process.stdout.write(
            o.json
              ? `${JSON.stringify(rows, null, 2)}\n`
              : rows.length === 0
                ? 'no names\n'
                : `${textTable([
                    ['NAME', 'ID', 'TYPE', 'SIZE'],
                    ...rows.map((r) => [r.name, r.id, r.typename, formatSize(r.nbytes)]),
                  ])}\n`,
          );
        });
      }),
    );

  const rm = new Command('rm')
    .exitOverride(usageExit)
    .description(
      "delete objects: a name is dropped and its object deleted, with the members no other object uses; a dataset's shards go with it (every copy of a replicated one; an unreplicated one only from its own store)",
    )
    .argument('<name-or-id...>')
    .option('--keep-shards', "delete a dataset's record only, not its shards")
    .addOption(socketOption())
    .option('--json', 'print [{ name, id, shards }] of what was removed')
    .action(
      reported(async (what: string[], o: { socket?: string; json?: boolean; keepShards?: boolean }) => {
        const removed = await withClient(o.socket, 'trellis rm', async (c) => {
          const out: { name?: string; id: string; shards: number; shardsKept?: number }[] = [];
          for (const w of what) {
            const id = await resolveId(c, w);
            // A dataset is a cluster-wide record over shards that are objects of their own.
            const loc = await c.locate(id).catch(() => undefined);
            const shards: string[] = [];
            let kept = 0;
            if (!o.keepShards && loc?.typename === DATASET_TYPENAME) {
              for (const s of loc.shards) {
                // Deleted by its id, a shard with a copy here goes from here; a replicated one goes with
                // every copy from any store. Only an unreplicated shard on another store cannot be reached.
                if (copyOn(s, c.instanceId) || s.replicas.length > 1) shards.push(s.id);
                else kept++;
              }
            }
            await c.delete([id, ...shards]);
            if (!isObjectId(w)) await c.dropName(w).catch(() => {});
            out.push({
              ...(isObjectId(w) ? {} : { name: w }),
              id,
              shards: shards.length,
              ...(kept ? { shardsKept: kept } : {}),
            });
          }
          return out;
        });
        process.stdout.write(
          o.json
            ? `${JSON.stringify(removed)}\n`
            : removed
                .map(
                  (r) =>
                    `removed ${r.name ? `${r.name} ` : ''}${r.id}${r.shards ? ` and its ${r.shards} shards` : ''}` +
                    (r.shardsKept
                      ? `; ${r.shardsKept} shards on other stores kept (not replicated: rm them there)`
                      : '') +
                    '\n',
                )
                .join(''),
        );
      }),
    );
  return [put, get, ls, rm];
}
