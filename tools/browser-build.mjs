// Bundles the in-browser chat (edge/browser.ts and the library under it) into one ES module,
// build/browser/sparrow.js, which the local servers hand to the chat page.
// The library reaches node: builtins only behind dynamic imports on paths the browser never takes
// (local files, worker threads, V8 flags); they stay as imports in the bundle and are never run.
// `--if-stale` skips the build when the bundle is newer than every source it is made from.
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'edge', 'browser.ts');
const outfile = join(root, 'build', 'browser', 'sparrow.js');

function newest(p) {
  if (!existsSync(p)) return 0;
  const s = statSync(p);
  if (!s.isDirectory()) return s.mtimeMs;
  let t = 0;
  for (const f of readdirSync(p)) t = Math.max(t, newest(join(p, f)));
  return t;
}

const inputs = [join(root, 'src'), join(root, 'edge', 'browser.ts'), join(root, 'edge', 'chat-stops.ts'), join(root, 'package-lock.json'), fileURLToPath(import.meta.url)];
if (process.argv.includes('--if-stale') && existsSync(outfile) && statSync(outfile).mtimeMs >= Math.max(...inputs.map(newest))) process.exit(0);

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  // esbuild is a devDependency; without it (production installs) the servers still run, only the in-browser mode is missing.
  console.error('browser-build: esbuild is not installed; the chat page\'s in-browser mode is unavailable');
  process.exit(0);
}
mkdirSync(dirname(outfile), { recursive: true });
await esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
  external: ['node:*'],
  logLevel: 'warning',
});
console.error(`browser-build: build/browser/sparrow.js ${(statSync(outfile).size / 1024).toFixed(1)} KB`);
