/**
 * The chart under test, rendered by a real helm (scripts/fetch-helm.sh puts one in .cache/):
 * lint, template, parse (YAML 1.1, as the API server reads it), validate with kubernetes-models
 * and round-trip through @kubernetes/client-node's serializer.
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { dumpYaml, loadYaml } from '@kubernetes/client-node';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Pod, Secret, Service } from 'kubernetes-models/v1';
import { parse, parseAllDocuments } from 'yaml';
import { ROOT } from './store.js';

const run = promisify(execFile);

export const CHART = `${ROOT}deploy/helm/trellis`;
export const CI_VALUES = `${ROOT}deploy/helm/ci`;

/** Rendered data, read field by field by the tests and the rules. */
// biome-ignore lint/suspicious/noExplicitAny: manifests are arbitrary nested data
export type Json = any;

/** A rendered object, as plain data. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; [k: string]: Json };
  [k: string]: Json;
}

/** The helm binary, fetched once per machine (cached under .cache/helm). */
export function helmBinary(): string {
  return execFileSync('bash', [`${ROOT}scripts/fetch-helm.sh`], { encoding: 'utf8', timeout: 300_000 }).trim();
}

export interface HelmRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function helm(bin: string, args: string[]): Promise<HelmRun> {
  try {
    const { stdout, stderr } = await run(bin, args, { maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Extra `helm template` flags a values file asks for in a `# helm-template-args:` line. */
export function templateArgsOf(valuesText: string): string[] {
  const line = /^# helm-template-args: (.*)$/m.exec(valuesText);
  return line ? line[1]!.trim().split(/\s+/) : [];
}

export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text, { version: '1.1' })
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

type Model = new (data: K8sObject) => { validate(): void };
const MODELS: Record<string, Model> = {
  'v1/Pod': Pod as unknown as Model,
  'v1/Secret': Secret as unknown as Model,
  'v1/Service': Service as unknown as Model,
  'apps/v1/DaemonSet': DaemonSet as unknown as Model,
  'apps/v1/Deployment': Deployment as unknown as Model,
  'apps/v1/StatefulSet': StatefulSet as unknown as Model,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as unknown as Model,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor as unknown as Model,
};

/** kubernetes-models' JSON-schema check: types, required fields, enums (it allows unknown fields). */
export function validateModel(o: K8sObject): void {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!Model) throw new Error(`no model for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

/** Kinds client-node's serializer knows; a custom resource's spec would be dropped by it. */
export function hasSerializer(o: K8sObject): boolean {
  return !o.apiVersion.includes('.coreos.com');
}

/**
 * The object after client-node's typed deserialize and serialize: fields it does not know (a
 * misspelt or misplaced key) are gone. Fed as JSON so that YAML 1.2 does not reread 0440.
 */
export function roundTrip(o: K8sObject): K8sObject {
  return parse(dumpYaml(loadYaml(JSON.stringify(o)))) as K8sObject;
}
