/**
 * deploy/prometheus/trellis-alerts.yml, the alerts docs/OPERATIONS.md
 * suggests: `promtool check rules` accepts it, its unit tests
 * (trellis-alerts.test.yml: each alert fires on the series it is for and
 * not on healthy ones) pass under `promtool test rules`, and every trellis_*
 * metric it names is one the store, the agent or the API really serves.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../dist/src/jobs/agent-metrics.js';
import { buildApi } from '../dist/src/jobs/api/build-api.js';
import { storeMetrics } from '../dist/src/store/store-metrics.js';
import { MemoryJobService } from './helpers/memory-job-service.js';
import { ROOT, startStore } from './helpers/store.js';

const run = promisify(execFile);
const RULES = join(ROOT, 'deploy/prometheus/trellis-alerts.yml');
const RULE_TESTS = join(ROOT, 'deploy/prometheus/trellis-alerts.test.yml');

/** Family names in Prometheus text, histograms' series folded into their family. */
function familyNames(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
}

describe('alert rules', () => {
  it('promtool checks the rules and passes their unit tests', async () => {
    const check = await run('promtool', ['check', 'rules', RULES]);
    expect(check.stdout).toBe(`Checking ${RULES}\n  SUCCESS: 12 rules found\n\n`);
    const tests = await run('promtool', ['test', 'rules', RULE_TESTS]);
    expect(tests.stdout).toBe(`Unit Testing:  ${RULE_TESTS}\n  SUCCESS\n\n`);
  });

  it('names only metrics that the store, the agent and the API serve', async () => {
    const s = await startStore();
    const app = buildApi({ service: new MemoryJobService() });
    try {
      const served = new Set([
        ...familyNames(await storeMetrics(s.store).metrics()),
        ...familyNames(
          await new AgentMetrics(
            () => 0,
            () => true,
          ).registry.metrics(),
        ),
        ...familyNames((await app.inject({ url: '/metrics' })).body),
      ]);
      const named = new Set(
        [...readFileSync(RULES, 'utf8').matchAll(/\btrellis_\w+/g)].map((m) =>
          m[0].replace(/_(bucket|count|sum)$/, ''),
        ),
      );
      expect([...named].filter((n) => !served.has(n))).toEqual([]);
      expect([...named].sort()).toEqual([
        'trellis_agent_redis_up',
        'trellis_agent_tasks_total',
        'trellis_api_agents',
        'trellis_api_request_duration_seconds',
        'trellis_store_info',
        'trellis_store_memory_limit_bytes',
        'trellis_store_memory_used_bytes',
        'trellis_store_migration_failures_total',
        'trellis_store_record_bytes',
        'trellis_store_record_limit_bytes',
        'trellis_store_request_duration_seconds',
        'trellis_store_rpc_auth_failures_total',
        'trellis_store_spills_total',
      ]);
    } finally {
      await app.close();
      await s.stop();
    }
  });
});
