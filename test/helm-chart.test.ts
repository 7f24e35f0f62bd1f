/**
 * deploy/helm/trellis, checked offline with a real helm: `helm lint --strict` and `helm template`
 * for every values file in deploy/helm/ci/, every rendered object validated by kubernetes-models
 * and round-tripped through @kubernetes/client-node's serializer (an unknown field would be
 * dropped), and our own rules (test/helpers/chart-rules.ts). No cluster runs here: what a real
 * install does is left to `helm test` (templates/tests/) and scripts/container-smoke.sh.
 */
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { chartViolations } from './helpers/chart-rules.js';
import {
  CHART,
  CI_VALUES,
  hasSerializer,
  helm,
  helmBinary,
  type Json,
  type K8sObject,
  parseManifests,
  roundTrip,
  templateArgsOf,
  validateModel,
} from './helpers/helm.js';
import { tempDir } from './helpers/store.js';

const VALUES = readdirSync(CI_VALUES)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
// The store pod's init container hands the root-owned hostPath directories to the store's user.
const ALLOW_ROOT = ['host-dirs'];

let bin = '';
beforeAll(() => {
  bin = helmBinary();
}, 300_000);

async function render(values: string[], args: string[] = [], chart = CHART): Promise<K8sObject[]> {
  const r = await helm(bin, [
    'template',
    't',
    chart,
    '--namespace',
    'ml',
    ...values.flatMap((f) => ['-f', f]),
    ...args,
  ]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return parseManifests(r.stdout);
}

const byName = (objects: K8sObject[], kind: string, name: string): K8sObject => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};
const containerOf = (o: K8sObject, name: string) =>
  (o.spec.template.spec.containers as Json[]).find((c) => c.name === name);

describe('the Helm chart', () => {
  it('has CI values files for defaults, external engines, TLS, monitoring and a large cluster', () => {
    expect(VALUES).toEqual(['defaults.yaml', 'external.yaml', 'large.yaml', 'monitoring.yaml', 'tls.yaml']);
  });

  describe.each(VALUES)('with ci/%s', (file) => {
    const path = join(CI_VALUES, file);

    it('passes helm lint --strict', async () => {
      const r = await helm(bin, ['lint', '--strict', CHART, '-f', path]);
      expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(r.code).toBe(0);
    });

    it('renders objects that kubernetes-models accepts, with no field the serializer does not know, and keeps our rules', async () => {
      const objects = await render([path], templateArgsOf(readFileSync(path, 'utf8')));
      expect(objects.length).toBeGreaterThan(3);
      for (const o of objects) {
        expect(() => validateModel(o), `${o.kind} ${o.metadata.name}`).not.toThrow();
        if (hasSerializer(o)) expect(roundTrip(o), `${o.kind} ${o.metadata.name}`).toEqual(o);
      }
      expect(chartViolations(objects, ALLOW_ROOT)).toEqual([]);
    });
  });

  it('renders, by default, the stores with their agents, etcd, Redis, the API, the token and a test pod', async () => {
    const objects = await render([]);
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'DaemonSet/t-trellis-store',
      'Deployment/t-trellis-api',
      'NetworkPolicy/t-trellis-etcd',
      'NetworkPolicy/t-trellis-redis',
      'Pod/t-trellis-smoke-job',
      'Secret/t-trellis-token',
      'Service/t-trellis-api',
      'Service/t-trellis-etcd',
      'Service/t-trellis-etcd-peer',
      'Service/t-trellis-redis',
      'Service/t-trellis-store',
      'StatefulSet/t-trellis-etcd',
      'StatefulSet/t-trellis-redis',
    ]);
    expect(byName(objects, 'Pod', 't-trellis-smoke-job').metadata.annotations['helm.sh/hook']).toBe('test');
    expect(Buffer.from(byName(objects, 'Secret', 't-trellis-token').data.token, 'base64').length).toBe(40);
  });

  it("ties the store's memory limit to --size plus headroom, and runs it with the chart's appVersion image", async () => {
    const objects = await render([], ['--set', 'store.sizeMiB=4096,store.headroomMiB=512']);
    const store = containerOf(byName(objects, 'DaemonSet', 't-trellis-store'), 'store');
    expect(store.image).toBe('trellis:0.1.0');
    expect(store.args.filter((a: string) => a.startsWith('--size='))).toEqual(['--size=4096M']);
    expect(store.resources).toEqual({ requests: { cpu: '250m', memory: '4608Mi' }, limits: { memory: '4608Mi' } });
    expect(store.args).toContain('--token-file=/etc/trellis/token/token');
    expect(store.args).toContain('--meta=etcd://t-trellis-etcd:2379');
  });

  it('uses external etcd and Redis when told, with the Redis URL from a Secret', async () => {
    const objects = await render([join(CI_VALUES, 'external.yaml')]);
    expect(objects.filter((o) => o.kind === 'StatefulSet' || o.kind === 'Secret')).toEqual([]);
    const api = containerOf(byName(objects, 'Deployment', 't-trellis-api'), 'api');
    expect(api.args).toContain('--meta=etcd://etcd.infra.svc:2379');
    expect(api.args).toContain('--redis=$(REDIS_URL)');
    expect(api.env).toEqual([
      { name: 'REDIS_URL', valueFrom: { secretKeyRef: { name: 'trellis-redis', key: 'url' } } },
    ]);
  });

  it('passes the TLS flags to stores (mutual) and the API, and probes the API over HTTPS', async () => {
    const objects = await render([join(CI_VALUES, 'tls.yaml')]);
    const tls = [
      '--tls-cert=/etc/trellis/tls/tls.crt',
      '--tls-key=/etc/trellis/tls/tls.key',
      '--tls-ca=/etc/trellis/tls/ca.crt',
    ];
    const store = containerOf(byName(objects, 'DaemonSet', 't-trellis-store'), 'store');
    const api = containerOf(byName(objects, 'Deployment', 't-trellis-api'), 'api');
    expect(store.args.filter((a: string) => a.startsWith('--tls'))).toEqual([...tls, '--tls-client-auth']);
    expect(api.args.filter((a: string) => a.startsWith('--tls'))).toEqual(tls);
    // Ready once a store and Redis answer (GET /readyz); alive while it serves (GET /healthz).
    expect([api.readinessProbe.httpGet, api.livenessProbe.httpGet]).toEqual([
      { path: '/readyz', port: 'http', scheme: 'HTTPS' },
      { path: '/healthz', port: 'http', scheme: 'HTTPS' },
    ]);
  });

  it('makes a ServiceMonitor only when the cluster serves monitoring.coreos.com/v1', async () => {
    const monitoring = join(CI_VALUES, 'monitoring.yaml');
    const without = await render([monitoring]);
    expect(without.filter((o) => o.kind === 'ServiceMonitor')).toEqual([]);
    const withApi = await render([monitoring], templateArgsOf(readFileSync(monitoring, 'utf8')));
    const sm = byName(withApi, 'ServiceMonitor', 't-trellis');
    expect(sm.spec.endpoints.map((e: Json) => e.port)).toEqual(['store-metrics', 'agent-metrics', 'http']);
    expect(sm.metadata.labels.release).toBe('prometheus');
  });

  it.each([
    [['--set', 'image.tag=latest'], 'image.tag: Must not validate the schema (not)'],
    [['--set', 'redis.image.tag=latest'], 'redis.image.tag: Must not validate the schema (not)'],
    [['--set', 'tls.enabled=true'], 'tls.existingSecret: String length must be greater than or equal to 1'],
    [['--set', 'etcd.enabled=false'], 'etcd.external.endpoint: String length must be greater than or equal to 1'],
    [['--set', 'auth.token=short'], 'auth.token: Must validate at least one schema (anyOf)'],
    [['--set', 'store.sizeMiB=1G'], 'store.sizeMiB: Invalid type. Expected: integer, given: string'],
    [['--set', 'store.sizeMi=1024'], 'store: Additional property sizeMi is not allowed'],
  ])('refuses bad values %j', async (args, message) => {
    const r = await helm(bin, ['template', 't', CHART, ...args]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(message);
  });

  it('the rules catch a chart that breaks them', async () => {
    const { dir, cleanup } = tempDir('trellis-chart-');
    try {
      const chart = join(dir, 'trellis');
      cpSync(CHART, chart, { recursive: true });
      const api = join(chart, 'templates/api-deployment.yaml');
      const text = readFileSync(api, 'utf8');
      // No readiness probe on the API, and a floating image tag on Redis.
      writeFileSync(api, text.replace(/ {10}readinessProbe:\n( {12}.*\n)+/, ''));
      const redis = join(chart, 'templates/redis-statefulset.yaml');
      writeFileSync(redis, readFileSync(redis, 'utf8').replace(/image: \{\{ printf .*\}\}/, 'image: redis:latest'));
      // And a webhook, which `helm install --wait` would depend on.
      writeFileSync(
        join(chart, 'templates/webhook.yaml'),
        'apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: trellis-check\nwebhooks: []\n',
      );
      const objects = await render([], [], chart);
      expect(chartViolations(objects, ALLOW_ROOT)).toEqual([
        'ValidatingWebhookConfiguration trellis-check: the chart must need no webhook, CRD or cert-manager',
        'Deployment t-trellis-api container api: no readinessProbe',
        'StatefulSet t-trellis-redis container redis: image redis:latest is :latest',
      ]);
      expect(chartViolations(objects)).toContain('DaemonSet t-trellis-store initContainer host-dirs: may run as root');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      cleanup();
    }
  });
});
