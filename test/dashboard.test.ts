/**
 * The dashboard (GET / of the API) in a real headless browser: Debian's
 * chromium driven by playwright-core, against the real stack — two stores on
 * 127.0.0.1/2 sharing a real etcd, a real Redis, a `trellis agent` next to
 * each store, the engine and the API listening on a free port. The page is
 * loaded before any job exists; jobs submitted over HTTP then show up and
 * move (state, loss curve, locality) with no reload. Asserts on the DOM and
 * that the page logs no console error; saves a screenshot to
 * test-output/dashboard.png (gitignored).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFashionMnist } from '../dist/examples/training/fashion-mnist.js';
import { connect, type TrellisClient } from '../dist/src/index.js';
import { ApiClient } from '../dist/src/jobs/api/api-client.js';
import { buildApi } from '../dist/src/jobs/api/build-api.js';
import { startJobService } from '../dist/src/jobs/engine.js';
import type { JobService, TrainJobSpec } from '../dist/src/jobs/job-types.js';
import { type RedisServerHandle, startRedisServer } from '../dist/src/jobs/redis-server.js';
import { writeDataset } from '../dist/src/loaders/shard-writer.js';
import { StoreServer, startRpc } from '../dist/src/store/index.js';
import { eventually } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { freshPrefix, killAgents, quiet, spawnAgent, spreadDataset } from './helpers/jobs.js';
import { ROOT, tempDir } from './helpers/store.js';

const TOKEN = 'dashboard-test-token-0123456789';
const MIB = 1024 * 1024;
const NODES = ['node-a', 'node-b'];
const SCREENSHOT = join(ROOT, 'test-output/dashboard.png');

describe('the dashboard in headless chromium', () => {
  let etcd: EtcdHandle;
  let redis: RedisServerHandle;
  let dir: ReturnType<typeof tempDir>;
  let stores: StoreServer[] = [];
  let clients: TrellisClient[] = [];
  let service: JobService;
  let app: ReturnType<typeof buildApi>;
  let url = '';
  let browser: Browser;
  let trainShards = 0;

  beforeAll(async () => {
    [etcd, redis] = await Promise.all([startEtcd(), startRedisServer()]);
    dir = tempDir('trellis-dash-');
    const metaPrefix = `/trellis-test/${randomUUID()}`;
    stores = await Promise.all(
      NODES.map((name, i) =>
        StoreServer.start(
          {
            socket: join(dir.dir, `${name}.sock`),
            size: 128 * MIB,
            name,
            meta: etcd.url,
            metaPrefix,
            rpcPort: 0,
            rpcHost: `127.0.0.${i + 1}`,
            token: TOKEN,
          },
          startRpc,
        ),
      ),
    );
    clients = await Promise.all(stores.map((s) => connect({ socket: s.opts.socket })));
    const data = loadFashionMnist();
    const rows = 6000;
    const written = await writeDataset(clients[0], 'fm/train', {
      features: { dtype: 'uint8', shape: [rows, 28, 28], data: data.train.images.subarray(0, rows * 784) },
      labels: data.train.labels.subarray(0, rows),
      shards: 2,
    });
    trainShards = written.shards.length;
    // Three shards on node-a, two on node-b: placement across the nodes.
    await spreadDataset(clients, 'spread', [0, 0, 1, 0, 1]);
    const prefix = freshPrefix();
    service = await startJobService({
      redis: redis.url,
      socket: stores[0].opts.socket,
      logger: quiet,
      prefix,
      scheduler: { tickMs: 50 },
    });
    await Promise.all(stores.map((s) => spawnAgent(s.opts.socket, redis.url, prefix)));
    await eventually(async () => (await service.nodes()).length === 2, 'both agents registered');
    app = buildApi({ service, token: TOKEN, dashboard: { intervalMs: 200 } });
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await killAgents();
    await service?.close();
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(stores.map((s) => s.close()));
    await Promise.all([etcd?.stop(), redis?.stop()]);
    dir?.cleanup();
  });

  /** A page that records every console error and uncaught exception. */
  async function open(path: string): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url + path);
    return { page, errors };
  }

  it('asks for the token, then shows both nodes with memory bars and where each shard lives', async () => {
    const { page, errors } = await open('/');
    await page.locator('#auth[data-open]').waitFor();
    expect(await page.locator('#status').textContent()).toBe('no token');
    await page.fill('#token', TOKEN);
    await page.click('#auth-form button');
    await page.locator('.node[data-node="node-b"]').waitFor();
    expect(await page.locator('#status').textContent()).toBe('live');

    const nodes = await service.nodes();
    const shown = await page.$$eval('.node', (els) =>
      els.map((e) => ({
        node: e.getAttribute('data-node'),
        used: Number(e.querySelector('.bar')!.getAttribute('aria-valuenow')),
        limit: Number(e.querySelector('.bar')!.getAttribute('aria-valuemax')),
        width: (e.querySelector('.fill') as unknown as { style: { width: string } }).style.width,
        text: e.querySelector('.mem')!.textContent,
      })),
    );
    expect(shown.map((n) => n.node).sort()).toEqual(NODES);
    for (const n of shown) {
      const info = nodes.find((x) => x.name === n.node)!;
      expect(n.limit).toBe(128 * MIB);
      expect(n.text).toMatch(/^\d+(\.\d)? (B|KiB|MiB) \/ 128\.0 MiB$/);
      expect(Number.parseFloat(n.width)).toBeCloseTo((100 * n.used) / n.limit, 3);
      expect(info.memoryLimit).toBe(n.limit);
    }

    const spread = await page.$$eval('.dataset[data-dataset="spread"] .shard', (els) =>
      els.map((e) => e.getAttribute('data-node')),
    );
    expect(spread).toEqual(['node-a', 'node-a', 'node-b', 'node-a', 'node-b']);
    const info = await service.dataset('spread');
    const onNode = await page.$$eval('.dataset[data-dataset="spread"] .on-node', (els) =>
      els.map((e) => e.getAttribute('data-node')),
    );
    expect(onNode.sort()).toEqual(Object.keys(info.bytesByNode).sort());
    expect(await page.locator('.dataset[data-dataset="fm/train"] .shard').count()).toBe(trainShards);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('shows jobs submitted after the page loaded, their state and loss curve moving live, with locality', async () => {
    const { page, errors } = await open(`/#token=${TOKEN}`);
    // The token left the address bar once taken.
    expect(new URL(page.url()).hash).toBe('');
    await page.locator('.node[data-node="node-a"]').waitFor();
    expect(await page.locator('tr.job').count()).toBe(0);
    // Every change to the long job's row, as the page makes it: [state, loss points].
    // (A string: this file is type-checked without the DOM's types.)
    await page.evaluate(`
      window.seen = [];
      new MutationObserver(() => {
        const row = document.querySelector('tr.job[data-job="dash-long"]');
        if (!row) return;
        const state = row.querySelector('.state').textContent;
        const points = Number(row.querySelector('svg.loss').getAttribute('data-points'));
        const last = window.seen.at(-1);
        if (!last || last[0] !== state || last[1] !== points) window.seen.push([state, points]);
      }).observe(document.getElementById('jobs'), { childList: true, subtree: true, attributes: true });
    `);
    const api = new ApiClient({ url, token: TOKEN });
    const train: TrainJobSpec = {
      kind: 'train',
      dataset: 'fm/train',
      model: { kind: 'softmax' },
      batchSize: 50,
      learningRate: 0.3,
    };

    // A job far too long to finish: watched until its curve has grown, then cancelled, so the
    // test takes as long on a fast machine as on a slow one (agents send progress every 500 ms).
    await api.submit({ ...train, id: 'dash-long', epochs: 10_000 });
    const long = page.locator('tr.job[data-job="dash-long"]');
    await expect
      .poll(async () => Number(await long.locator('svg.loss').getAttribute('data-points')), { timeout: 90_000 })
      .toBeGreaterThanOrEqual(3);
    await api.cancel('dash-long');
    await long.locator('.state[data-state="cancelled"]').waitFor({ timeout: 60_000 });
    const events = [];
    for await (const ev of api.events('dash-long')) events.push(ev);
    const losses = events.flatMap((e) => (e.type === 'progress' && e.data.loss !== undefined ? [e.data.loss] : []));
    await expect.poll(() => long.locator('svg.loss').getAttribute('data-points')).toBe(String(losses.length));
    expect(await long.locator('svg.loss polyline').count()).toBe(1);
    expect(await long.locator('.kind').textContent()).toBe('train');
    const seen = (await page.evaluate('window.seen')) as [string, number][];
    // Loaded before the job existed, the page saw it queued or running, its curve growing
    // point by point while it ran, then cancelled: all without a reload.
    expect(['queued', 'running']).toContain(seen[0]![0]);
    expect(seen.at(-1)).toEqual(['cancelled', losses.length]);
    const points = seen.map((x) => x[1]);
    expect(points).toEqual([...points].sort((a, b) => a - b));
    expect(seen.filter(([state, n]) => state === 'running' && n > 0).length).toBeGreaterThanOrEqual(3);

    // A short job that succeeds: its row says where its input was read (locality is counted on success).
    await api.submit({ ...train, id: 'dash-short', epochs: 3 });
    const short = page.locator('tr.job[data-job="dash-short"]');
    await short.locator('.state[data-state="succeeded"]').waitFor({ timeout: 90_000 });
    const job = await api.get('dash-short');
    const local = job.tasks.reduce((sum, t) => sum + t.bytesLocal, 0);
    const moved = job.tasks.reduce((sum, t) => sum + t.bytesMoved, 0);
    expect(local + moved).toBeGreaterThan(0);
    const loc = short.locator('td.locality');
    await expect.poll(() => loc.getAttribute('data-local')).toBe(String(local));
    expect(await loc.getAttribute('data-moved')).toBe(String(moved));
    expect(await page.locator('tr.job').count()).toBe(2);

    mkdirSync(join(ROOT, 'test-output'), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);
});
