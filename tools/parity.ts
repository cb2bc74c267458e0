// npm run parity -- [dirs…] [--quantized] [--build simd|relaxed] [--backend wasm|webgpu]
// --backend webgpu needs a runtime with WebGPU: run from Node (which has none built in), the same
// command runs again under Deno (the `deno` npm package), whose WebGPU works on every host here.
// Runs every fixture found under the given directories (default: the committed fixtures) and
// prints one row per fixture, then "N passed, N failed". Exit code 1 on any failure.

import { findFixtures, formatRow, HEADER, isDir, runFixture } from './parity-lib';

const args = process.argv.slice(2);
const quantized = args.includes('--quantized') || args.includes('-q');
const bi = args.indexOf('--build');
const build = bi >= 0 ? (args[bi + 1] as any) : 'auto';
const bk = args.indexOf('--backend');
const backend = bk >= 0 ? (args[bk + 1] as 'wasm' | 'webgpu') : 'wasm';
if (backend !== 'wasm' && backend !== 'webgpu') {
  console.error(`parity: --backend must be wasm or webgpu, got ${backend}`);
  process.exit(2);
}
if (backend === 'webgpu' && !(globalThis as any).navigator?.gpu && !(globalThis as any).Deno) {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync('npx', ['deno', 'run', '--allow-read', '--allow-env', '--unstable-sloppy-imports', 'tools/parity.ts', ...args], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const dirs = args.filter((a, i) => !a.startsWith('-') && args[i - 1] !== '--build' && args[i - 1] !== '--backend');
const roots = dirs.length ? dirs : ['test/fixtures/parity', 'models'];
let fixtures: string[] = [];
for (const r of roots) {
  if (!(await isDir(r))) {
    if (dirs.length) {
      console.error(`parity: ${r} is not a directory`);
      process.exit(2);
    }
    continue;
  }
  fixtures.push(...(await findFixtures(r, { diffusion: true })));
}
fixtures = [...new Set(fixtures)];
if (!fixtures.length) {
  console.error(`parity: no fixtures (directories holding reference.json) under ${roots.join(', ')}`);
  process.exit(2);
}
console.log(HEADER);
let passed = 0, failed = 0;
for (const f of fixtures) {
  const r = await runFixture(f, { quantized, build, backend });
  console.log(formatRow(r));
  if (r.pass) passed++;
  else failed++;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
