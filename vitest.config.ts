import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // 2-core CI machine: two workers keep real-socket tests from starving each other.
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'direct', include: ['test/**/*.test.ts'] } },
      // The same conversation and attack tests with every client going through multiplexors.
      { extends: true, test: { name: 'mux-1', include: ['test/integration/**/*.test.ts', 'test/hardening/**/*.test.ts'], env: { PARLEY_TEST_MUX: '1' } } },
      { extends: true, test: { name: 'mux-2', include: ['test/integration/**/*.test.ts'], env: { PARLEY_TEST_MUX: '2' } } },
    ],
  },
});
