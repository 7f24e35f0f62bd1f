/**
 * `trellis jobs ls` and `show` for people: aligned columns, one job per line
 * or one field per line. Scripts use --json, which prints the API's records.
 */
import type { Job } from '../jobs/job-types.js';
import { textTable } from './text-table.js';

/** What a job is doing, in a few words: its progress while it runs, else why it waits or failed. */
function detail(j: Job): string {
  const p = j.progress;
  if (j.state === 'running' && p) {
    const parts = [
      p.epoch !== undefined ? `epoch ${p.epoch}` : '',
      p.step !== undefined ? `step ${p.step}` : '',
      p.loss !== undefined ? `loss ${p.loss.toFixed(4)}` : '',
      p.etaMs !== undefined ? `eta ${Math.round(p.etaMs / 1000)}s` : '',
    ];
    return parts.filter(Boolean).join(', ');
  }
  if (j.error) return `${j.error.code}: ${j.error.message}`;
  return j.reason ?? '';
}

export function formatJobList(jobs: Job[]): string {
  if (jobs.length === 0) return 'no jobs\n';
  const rows = [
    ['ID', 'KIND', 'STATE', 'CREATED', 'DETAIL'],
    ...jobs.map((j) => [j.id, j.kind, j.state, j.createdAt, detail(j)]),
  ];
  return `${textTable(rows)}\n`;
}

export function formatJob(j: Job): string {
  const lines: [string, string | undefined][] = [
    ['id', j.id],
    ['kind', j.kind],
    ['state', j.state],
    ['reason', j.reason],
    ['created', j.createdAt],
    ['started', j.startedAt],
    ['ended', j.endedAt],
    ['dataset', j.spec.dataset],
    ['progress', j.progress ? detail({ ...j, state: 'running' }) : undefined],
    ['model', j.result?.model],
    ['accuracy', j.result?.metrics?.accuracy?.toFixed(4)],
    ['output', j.result?.output],
    ['error', j.error ? `${j.error.code}: ${j.error.message}` : undefined],
    ['restarts', j.restarts ? String(j.restarts) : undefined],
    ...(j.warnings ?? []).map((w): [string, string] => ['warning', w]),
  ];
  let out = textTable(
    lines.filter((l): l is [string, string] => l[1] !== undefined && l[1] !== '').map(([k, v]) => [`${k}:`, v]),
  );
  out += '\n';
  if (j.tasks.length > 0) {
    const rows = [
      ['TASK', 'NODE', 'STATE', 'ATTEMPTS', 'LOCAL', 'MOVED', 'PLACEMENT'],
      ...j.tasks.map((t) => [
        String(t.index),
        t.node,
        t.state,
        String(t.attempts),
        String(t.bytesLocal),
        String(t.bytesMoved),
        t.placement?.reason ?? '',
      ]),
    ];
    out += `\n${textTable(rows)}\n`;
  }
  const ranks = j.result?.ranks ?? [];
  if (ranks.length > 0) {
    const ms = (n: number) => n.toFixed(2);
    const rows = [
      ['RANK', 'NODE', 'ROWS', 'STEPS', 'COMPUTE MS', 'EXCHANGE MS', 'WAITING MS', 'PARAMS SHA-256'],
      ...ranks.map((r) => [
        String(r.rank),
        r.node,
        String(r.rows),
        String(r.steps),
        ms(r.stepMs.compute),
        ms(r.stepMs.exchange),
        ms(r.stepMs.waiting),
        r.paramsSha256.slice(0, 16),
      ]),
    ];
    out += `\n${textTable(rows)}\n`;
  }
  return out;
}
