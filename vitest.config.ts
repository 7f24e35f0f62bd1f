import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Tests start real stores and child processes; two at a time fits 2 vCPUs.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
