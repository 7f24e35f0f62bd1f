/**
 * deploy/Dockerfile and deploy/compose.yaml, read as files: what scripts/container-smoke.sh proves
 * by running them (minutes, so not in `npm test`) must at least stay written down. The base is an
 * ARG defaulting to node:20-bookworm-slim, no `# syntax=` line (it would pull an image), a numeric
 * non-root user, node as the entry point; compose runs etcd, Redis with noeviction and AOF, a store
 * with its agent on one socket volume and the API on 127.0.0.1 only.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { Json } from './helpers/helm.js';
import { ROOT } from './helpers/store.js';

/** `${inner}`, the shell/compose substitution, spelt without a template-string look-alike. */
const sub = (inner: string): string => ['$', '{', inner, '}'].join('');

const dockerfile = readFileSync(`${ROOT}deploy/Dockerfile`, 'utf8');
const compose = parse(readFileSync(`${ROOT}deploy/compose.yaml`, 'utf8'), { merge: true }) as Json;
const instructions = dockerfile
  .split('\n')
  .filter((l) => /^[A-Z]+ /.test(l))
  .map((l) => l.split(' ')[0]);

describe('deploy/Dockerfile', () => {
  it('takes its bases as ARGs, defaulting to the node 20 bookworm images, and has no syntax line', () => {
    expect(dockerfile.split('\n').filter((l) => l.startsWith('ARG '))).toEqual([
      'ARG BASE_IMAGE=node:20-bookworm-slim',
      'ARG BUILD_IMAGE=node:20-bookworm',
    ]);
    expect(dockerfile).not.toMatch(/^#\s*syntax=/m);
    expect(dockerfile.split('\n').filter((l) => l.startsWith('FROM '))).toEqual([
      `FROM ${sub('BUILD_IMAGE')} AS build`,
      `FROM ${sub('BASE_IMAGE')}`,
    ]);
  });

  it('runs node as PID 1 as a numeric non-root user', () => {
    expect(dockerfile.split('\n').filter((l) => /^(USER|ENTRYPOINT) /.test(l))).toEqual([
      'USER 10001:10001',
      'ENTRYPOINT ["node", "/app/bin/trellis.js"]',
    ]);
    expect(instructions.at(-1)).toBe('CMD');
  });
});

describe('deploy/compose.yaml', () => {
  it('runs etcd, Redis, a store, its agent and the API', () => {
    expect(Object.keys(compose.services)).toEqual(['etcd', 'redis', 'store', 'agent', 'api']);
  });

  it('sets Redis to noeviction with AOF', () => {
    const cmd: string[] = compose.services.redis.command;
    const flag = (name: string) => cmd[cmd.indexOf(name) + 1];
    expect([flag('--appendonly'), flag('--maxmemory-policy')]).toEqual(['yes', 'noeviction']);
  });

  it('shares the socket volume between the store and its agent, and limits the store memory', () => {
    expect(compose.services.store.volumes).toEqual(['socket:/run/trellis']);
    expect(compose.services.agent.volumes).toEqual(['socket:/run/trellis']);
    expect(compose.services.store.command).toContain('--socket=/run/trellis/store.sock');
    expect(compose.services.agent.command).toContain('--socket=/run/trellis/store.sock');
    expect(compose.services.store.mem_limit).toBe(sub('TRELLIS_STORE_MEM:-768m'));
  });

  it('publishes only the API, on 127.0.0.1, and never uses a :latest image', () => {
    const published = Object.entries(compose.services as Record<string, Json>)
      .filter(([, s]) => s.ports)
      .map(([name, s]) => [name, s.ports]);
    expect(published).toEqual([['api', [`127.0.0.1:${sub('TRELLIS_API_PORT:-7080')}:7080`]]]);
    for (const s of Object.values(compose.services as Record<string, Json>)) {
      expect(s.image).toMatch(/^\$\{[A-Z_]+:-[^}]+:[^}]+\}$/);
      expect(s.image).not.toContain(':latest');
    }
  });
});
