import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist/ first: tests import the built package ('trellis', 'trellis/models', 'trellis/store').
    globalSetup: ['test/global-setup.ts'],
    // Load dist/ with Node's own loader, not vite's transform, so the code under test is exactly
    // what users, worker threads and child processes run (one module instance, one TrellisError).
    server: { deps: { external: [/\/dist\//] } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Tests start real stores and child processes; two at a time fits 2 vCPUs.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
