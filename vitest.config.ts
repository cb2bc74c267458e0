import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/workers/**', 'node_modules/**'],
    // Node 20 needs both flags for correct relaxed-SIMD int8 dots; they do not pass through NODE_OPTIONS.
    execArgv: ['--experimental-wasm-relaxed-simd', '--no-liftoff'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
