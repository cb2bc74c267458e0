// Builds the three kernel modules from one AssemblyScript source (assembly/index.ts):
//   build/simd.wasm     baseline SIMD128, runs everywhere
//   build/relaxed.wasm  + relaxed SIMD (ASC_FEATURE_RELAXED_SIMD selects the relaxed code paths)
//   build/threads.wasm  baseline SIMD128 + shared memory and atomics, for worker pools
// All three import their memory (env.memory) so the host lays out one arena per model.
// `--if-stale` skips the build when every output is newer than every assembly/ source.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build');
const asc = join(root, 'node_modules', 'assemblyscript', 'bin', 'asc.js');

const common = ['assembly/index.ts', '-O3', '--runtime', 'stub', '--noAssert', '--importMemory',
  '--initialMemory', '2', '--use', 'abort='];
const builds = [
  { name: 'simd', flags: ['--enable', 'simd'] },
  { name: 'relaxed', flags: ['--enable', 'simd,relaxed-simd'] },
  { name: 'threads', flags: ['--enable', 'simd,threads', '--sharedMemory', '--maximumMemory', '65536'] },
];

function newestSource(dir) {
  let t = 0;
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    const s = statSync(p);
    t = Math.max(t, s.isDirectory() ? newestSource(p) : s.mtimeMs);
  }
  return t;
}

if (!existsSync(asc)) {
  console.error('asbuild: assemblyscript is not installed; run npm install');
  process.exit(1);
}
mkdirSync(out, { recursive: true });
const srcTime = Math.max(newestSource(join(root, 'assembly')), statSync(fileURLToPath(import.meta.url)).mtimeMs);
const stale = builds.some((b) => !existsSync(join(out, `${b.name}.wasm`)) || statSync(join(out, `${b.name}.wasm`)).mtimeMs < srcTime);
if (process.argv.includes('--if-stale') && !stale) process.exit(0);
for (const b of builds) {
  execFileSync(process.execPath, [asc, ...common, ...b.flags, '-o', `build/${b.name}.wasm`], { cwd: root, stdio: 'inherit' });
}
const sizes = builds.map((b) => `${b.name}.wasm ${(statSync(join(out, `${b.name}.wasm`)).size / 1024).toFixed(1)} KB`);
console.error(`asbuild: ${sizes.join(', ')}`);
