#!/usr/bin/env node
/**
 * Fails on an import cycle between the package's modules, read from the
 * compiled output in dist/ (run the build first; `npm run lint` does).
 *
 * Three kinds of edge, all followed (each cycle says which it uses):
 * - static: `import … from` / `export … from` / `import '…'` in the .js;
 * - dynamic: `import('…')` with a string literal in the .js. A lazy load is
 *   still a dependency: the layering of folders must hold whether a module
 *   is loaded at start or on first use, or lazy imports become a way to hide
 *   a cycle;
 * - type: imports in the .d.ts (tsc erases type-only imports from the .js,
 *   but a type cycle still ties two modules together).
 * A cycle is a strongly connected component of that graph. Only modules
 * whose source exists (src/, examples/) count, so stale outputs cannot.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');

/**
 * Cycles that exist and are being removed (issue 7): each is the sorted set
 * of its modules. A cycle equal to or inside one of these passes; any other
 * fails. Delete an entry once its cycle is gone (the script says so).
 */
/** Cycles tolerated for now (each with its reason); none today. */
const KNOWN = [];

const STATIC = /(?:^|[\n;])\s*(?:import|export)\s[^'"`;]*?\bfrom\s*(['"])([^'"\n]+)\1/g;
const BARE = /(?:^|[\n;])\s*import\s*(['"])([^'"\n]+)\1/g;
const DYNAMIC = /\bimport\(\s*(['"])([^'"\n]+)\1\s*\)/g;

function* sources(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) yield relative(ROOT, p).replace(/\.ts$/, '');
  }
}

/** Module name (e.g. 'src/client/client') → [{ to, kind }], from the compiled .js and .d.ts. */
function graph(modules) {
  const edges = new Map();
  const known = new Set(modules);
  for (const m of modules) {
    const out = [];
    const scan = (file, patterns) => {
      if (!existsSync(file))
        throw new Error(`${relative(ROOT, file)} is missing: build first (node scripts/build.mjs)`);
      const text = readFileSync(file, 'utf8');
      for (const [re, kind] of patterns) {
        for (const match of text.matchAll(re)) {
          const spec = match[2];
          if (!spec.startsWith('.')) continue; // packages and node: builtins are outside the graph
          const to = relative(DIST, resolve(dirname(file), spec)).replace(/\.(d\.ts|js)$/, '');
          if (known.has(to) && !out.some((e) => e.to === to && e.kind === kind)) out.push({ to, kind });
        }
      }
    };
    scan(join(DIST, `${m}.js`), [
      [STATIC, 'static'],
      [BARE, 'static'],
      [DYNAMIC, 'dynamic'],
    ]);
    scan(join(DIST, `${m}.d.ts`), [
      [STATIC, 'type'],
      [DYNAMIC, 'type'],
    ]);
    edges.set(m, out);
  }
  return edges;
}

/** Strongly connected components with more than one module, or a module importing itself (Tarjan). */
function cycles(edges) {
  let next = 0;
  const index = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const found = [];
  const visit = (v) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const { to } of edges.get(v)) {
      if (!index.has(to)) {
        visit(to);
        low.set(v, Math.min(low.get(v), low.get(to)));
      } else if (onStack.has(to)) low.set(v, Math.min(low.get(v), index.get(to)));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || edges.get(v).some((e) => e.to === v)) found.push(scc.sort());
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return found;
}

const modules = ['src', 'examples']
  .filter((d) => existsSync(join(ROOT, d)))
  .flatMap((d) => [...sources(join(ROOT, d))]);
const edges = graph(modules);
const found = cycles(edges);
const isKnown = (scc) => KNOWN.some((k) => scc.every((m) => k.includes(m)));
/** A shortest loop from `start` back to itself inside the component, as "a -> b (kind) -> …". */
function loop(start, inside, edges) {
  const from = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const e of edges.get(v)) {
      if (e.to === start) {
        const path = [`${v} -> ${start} (${e.kind})`];
        for (let w = v; from.get(w); w = from.get(w).v) path.unshift(`${from.get(w).v} -> ${w} (${from.get(w).kind})`);
        return path;
      }
      if (inside.has(e.to) && !from.has(e.to)) {
        from.set(e.to, { v, kind: e.kind });
        queue.push(e.to);
      }
    }
  }
  return [];
}

let failed = false;
for (const scc of found) {
  const known = isKnown(scc);
  if (!known) failed = true;
  const path = loop(scc[0], new Set(scc), edges).map((l) => `    ${l}`);
  console.log(
    `${known ? 'known cycle (being removed)' : 'IMPORT CYCLE'} among ${scc.length} modules (${scc.join(', ')}); one loop:\n${path.join('\n')}`,
  );
}
for (const k of KNOWN) {
  if (!found.some((scc) => scc.some((m) => k.includes(m)))) {
    console.log(`the known cycle of ${k.join(', ')} is gone: delete it from KNOWN in scripts/check-cycles.mjs`);
  }
}
// Folders too (src/client, src/store, …): reported, not failed on yet. The blueprint's layering wants
// none, but the ones left today are on the issue 7 list (the client imports server types).
const folderOf = (m) => m.split('/').slice(0, 2).join('/');
const folderEdges = new Map(modules.map((m) => [folderOf(m), []]));
for (const [m, out] of edges) {
  for (const e of out) {
    const [a, b] = [folderOf(m), folderOf(e.to)];
    if (a !== b && !folderEdges.get(a).some((x) => x.to === b && x.kind === e.kind)) {
      folderEdges.get(a).push({ to: b, kind: e.kind, via: `${m} -> ${e.to}` });
    }
  }
}
for (const scc of cycles(folderEdges).filter((c) => c.length > 1)) {
  const inside = new Set(scc);
  const via = scc.flatMap((f) =>
    folderEdges
      .get(f)
      .filter((e) => inside.has(e.to))
      .map((e) => `    ${e.via} (${e.kind})`),
  );
  console.log(`note: folders ${scc.join(' <-> ')} import each other:\n${via.join('\n')}`);
}
console.log(`${modules.length} modules, ${found.length} cycle(s), ${failed ? 'new ones: failing' : 'none new'}`);
process.exit(failed ? 1 : 0);
