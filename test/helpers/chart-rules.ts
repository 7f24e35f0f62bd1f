/**
 * Our own rules for the chart's rendered objects, beyond what Kubernetes accepts: no webhook, CRD
 * or cert-manager object, stores run as a DaemonSet with their agent beside them, every long-running container has probes, every container
 * has resources, no image is `:latest` or untagged, and containers run as non-root unless named in
 * `allowRoot`. Returns one line per broken rule, so a test can assert the exact list.
 */
import type { Json, K8sObject } from './helm.js';

interface PodOf {
  where: string;
  kind: string;
  pod: Json;
  hook: boolean;
}

const WORKLOADS = new Set(['DaemonSet', 'Deployment', 'StatefulSet', 'Job', 'CronJob', 'ReplicaSet']);

function podsOf(objects: K8sObject[]): PodOf[] {
  const out: PodOf[] = [];
  for (const o of objects) {
    const where = `${o.kind} ${o.metadata.name}`;
    if (o.kind === 'Pod') {
      out.push({ where, kind: o.kind, pod: o, hook: Boolean(o.metadata.annotations?.['helm.sh/hook']) });
    } else if (WORKLOADS.has(o.kind)) {
      out.push({ where, kind: o.kind, pod: o.spec.template, hook: false });
    }
  }
  return out;
}

/** The trellis subcommand a container runs (`store`, `agent`, `api`), if any. */
export function trellisCommand(c: Json): string | undefined {
  const words: string[] = [...(c.command ?? []), ...(c.args ?? [])];
  const inline = words.map((w) => /trellis\.js (\w+)/.exec(w)?.[1]).find(Boolean);
  if (inline) return inline;
  const i = words.findIndex((w) => w.endsWith('trellis.js'));
  if (i >= 0) return words[i + 1];
  // No command: the image's entrypoint is `node /app/bin/trellis.js`.
  return c.command ? undefined : c.args?.[0];
}

function mib(q: string): number {
  const m = /^(\d+)(Mi|Gi)$/.exec(q);
  if (!m) throw new Error(`memory quantity ${q} is not in Mi or Gi`);
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1);
}

// `helm install --wait` must just work: nothing that needs a webhook, cert-manager or a CRD installed.
const FORBIDDEN_KINDS = new Set([
  'MutatingWebhookConfiguration',
  'ValidatingWebhookConfiguration',
  'CustomResourceDefinition',
  'APIService',
]);

export function chartViolations(objects: K8sObject[], allowRoot: string[] = []): string[] {
  const bad: string[] = [];
  for (const o of objects) {
    if (FORBIDDEN_KINDS.has(o.kind) || o.apiVersion.startsWith('cert-manager.io/')) {
      bad.push(`${o.kind} ${o.metadata.name}: the chart must need no webhook, CRD or cert-manager`);
    }
  }
  let storePods = 0;
  for (const { where, kind, pod, hook } of podsOf(objects)) {
    const spec = pod.spec;
    const podSc = spec.securityContext ?? {};
    const all = [
      ...(spec.initContainers ?? []).map((c: Json) => ({ c, init: true })),
      ...spec.containers.map((c: Json) => ({ c, init: false })),
    ];
    for (const { c, init } of all) {
      const at = `${where} ${init ? 'initContainer' : 'container'} ${c.name}`;
      if (!init && !hook) {
        if (!c.livenessProbe) bad.push(`${at}: no livenessProbe`);
        if (!c.readinessProbe) bad.push(`${at}: no readinessProbe`);
      }
      const r = c.resources ?? {};
      if (!r.requests?.cpu || !r.requests?.memory || !r.limits?.memory) {
        bad.push(`${at}: resources need requests.cpu, requests.memory and limits.memory`);
      }
      const image: string = c.image ?? '';
      const tag = image.includes('@') ? 'digest' : image.slice(image.lastIndexOf('/') + 1).split(':')[1];
      if (!tag) bad.push(`${at}: image ${image} has no tag`);
      else if (tag === 'latest') bad.push(`${at}: image ${image} is :latest`);
      const nonRoot = c.securityContext?.runAsNonRoot ?? podSc.runAsNonRoot;
      const uid = c.securityContext?.runAsUser ?? podSc.runAsUser;
      if ((nonRoot !== true || uid === 0) && !allowRoot.includes(c.name)) bad.push(`${at}: may run as root`);
    }
    const cmds = spec.containers.map(trellisCommand);
    if (cmds.includes('store')) {
      storePods++;
      if (kind !== 'DaemonSet') bad.push(`${where}: runs a store but is a ${kind}, not a DaemonSet`);
      const store = spec.containers[cmds.indexOf('store')];
      const agent = spec.containers[cmds.indexOf('agent')];
      if (!agent) bad.push(`${where}: no agent container beside the store`);
      const socketArg = (store.args as string[]).find((a) => a.startsWith('--socket='));
      const socketDir = socketArg?.slice('--socket='.length).replace(/\/[^/]+$/, '');
      const mounts = (c: Json) =>
        (c?.volumeMounts ?? []).filter((m: Json) => m.mountPath === socketDir).map((m: Json) => m.name);
      const shared = mounts(store).filter((n: string) => mounts(agent).includes(n));
      const hostPath = shared.some((n: string) => spec.volumes.find((v: Json) => v.name === n)?.hostPath);
      if (!hostPath) bad.push(`${where}: the socket directory ${socketDir} is not a hostPath shared with the agent`);
      const size = (store.args as string[]).find((a) => a.startsWith('--size='));
      const sizeMiB = size ? Number(/^--size=(\d+)M$/.exec(size)?.[1]) : Number.NaN;
      const limit = store.resources?.limits?.memory;
      if (!(limit && mib(limit) > sizeMiB)) bad.push(`${where}: store memory limit ${limit} is not above ${size}`);
    }
  }
  if (storePods !== 1) bad.push(`expected one workload running the store, found ${storePods}`);
  return bad;
}
