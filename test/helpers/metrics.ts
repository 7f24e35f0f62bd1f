/**
 * Metrics test helpers: scraping a /metrics endpoint, reading one sample's
 * value out of the Prometheus text, keeping only our own families (trellis_*:
 * prom-client's default nodejs_* metrics do not pass promtool), and running
 * the real `promtool check metrics` (Debian package prometheus) over a text.
 */
import { spawn } from 'node:child_process';

export async function scrape(baseUrl: string): Promise<string> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  return res.text();
}

function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

/** The value of the sample `name` whose labels are exactly `labels`; undefined when there is none. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.length === 0) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (JSON.stringify(Object.entries(parseLabels(m[2] ?? '')).sort()) === want) return Number(m[3]);
  }
  return undefined;
}

/** The families whose names start with `prefix` (their HELP, TYPE and samples), in order. */
export function families(text: string, prefix = 'trellis_'): string {
  const keep: string[] = [];
  for (const line of text.split('\n')) {
    const name = line.startsWith('# ') ? line.split(' ')[2] : line.split(/[{ ]/)[0];
    if (name?.startsWith(prefix)) keep.push(line);
  }
  return `${keep.join('\n')}\n`;
}

/** `promtool check metrics` over `text`: its exit code and what it said. */
export function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}
