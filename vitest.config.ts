import { defineConfig } from 'vitest/config'

// Native addons must not load in worker threads: run every file in a forked process.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['__test__/**/*.spec.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    benchmark: {
      include: ['bench/**/*.bench.ts'],
    },
  },
})
