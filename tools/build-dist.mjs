// Builds the installable package under dist/: plain JavaScript for Node 20 (no TypeScript loader),
// type declarations, and the files the code reads at run time.
//
// dist/ mirrors the repository root, so every path the sources compute from import.meta.url
// (src/kernels/runtime.ts → ../../build/*.wasm, src/cli.ts → ../models/sparrow-mini/,
// edge/local.ts → ../build/, ../models/) resolves inside dist/:
//
//   dist/src/**/*.js, *.d.ts    the library (src/index.ts) and the CLI (src/cli.ts, the `sparrow` bin)
//   dist/edge/*.js, *.d.ts      the local server that `sparrow serve` starts (src/cli.ts imports
//                               edge/serve-local.ts when it runs; that module and its imports)
//   dist/build/*.wasm           the three kernel builds (tools/asbuild.mjs), and build/browser/ when built
//   dist/models/sparrow-mini/   the default model
//
// Each source file becomes one module (esbuild, no bundling): relative imports get their file
// extension (./index → ./index.js, ./formats → ./formats/index.js; static imports and literal
// `import('…')` alike) and packages stay imports of the dependencies. Declarations come from tsc (emitDeclarationOnly, tsconfig.build.json) with the same
// rewriting. Offline: esbuild and typescript are devDependencies.
//
//   node tools/build-dist.mjs [--if-stale]    (--if-stale: nothing to do when dist/ is newer than its inputs)
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const stamp = join(dist, '.built');
const ENTRIES = ['src/index.ts', 'src/cli.ts', 'edge/serve-local.ts'].map((f) => join(root, f));
const MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.q8_0.gguf', 'README.md'];

function newest(p) {
  if (!existsSync(p)) return 0;
  const s = statSync(p);
  if (!s.isDirectory()) return s.mtimeMs;
  let t = 0;
  for (const f of readdirSync(p)) t = Math.max(t, newest(join(p, f)));
  return t;
}

const inputs = ['src', 'edge', 'build', 'models/sparrow-mini', 'package.json', 'tsconfig.json', 'tsconfig.build.json', 'tools/build-dist.mjs'].map((f) => join(root, f));
if (process.argv.includes('--if-stale') && existsSync(stamp) && statSync(stamp).mtimeMs >= Math.max(...inputs.map(newest))) process.exit(0);

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('build-dist: esbuild is not installed (npm install installs the devDependencies); dist/ not built');
  process.exit(1);
}
for (const f of ['simd', 'relaxed', 'threads']) {
  if (!existsSync(join(root, 'build', `${f}.wasm`))) {
    console.error(`build-dist: build/${f}.wasm is missing; run npm run asbuild first`);
    process.exit(1);
  }
}

/** The file a relative specifier of `fromFile` names: itself, with .ts/.js, or a directory's index. */
function resolveSource(fromFile, spec) {
  const base = resolve(dirname(fromFile), spec);
  const tries = /\.(ts|js|mjs)$/.test(spec) ? [base] : [`${base}.ts`, `${base}.js`, join(base, 'index.ts'), join(base, 'index.js')];
  return tries.find((p) => existsSync(p) && statSync(p).isFile());
}

/** The specifier that names `target`'s built module from `fromFile`'s (both mirror the source tree). */
function builtSpecifier(fromFile, target) {
  let rel = relative(dirname(fromFile), target.replace(/\.ts$/, '.js')).split(sep).join('/');
  if (!rel.startsWith('.')) rel = `./${rel}`;
  return rel;
}

const outOf = (src) => join(dist, relative(root, src)).replace(/\.ts$/, '.js');

// 1. The module graph from the entries (packages and node: builtins are not followed).
const graph = await esbuild.build({
  entryPoints: ENTRIES,
  bundle: true,
  write: false,
  metafile: true,
  platform: 'node',
  format: 'esm',
  packages: 'external',
  outdir: join(dist, '.graph'),
  logLevel: 'error',
});
const modules = Object.keys(graph.metafile.inputs).map((p) => resolve(root, p)).filter((p) => /\.(ts|js)$/.test(p) && !p.includes(`${sep}node_modules${sep}`));

// 2. One output module per source module, relative imports rewritten to the built files.
const rewrite = {
  name: 'relative-imports',
  setup(b) {
    b.onResolve({ filter: /^\.\.?(\/|$)/ }, (args) => {
      if (args.kind === 'entry-point') return undefined;
      const target = resolveSource(args.importer, args.path);
      if (!target) return { errors: [{ text: `cannot resolve ${args.path} from ${relative(root, args.importer)}` }] };
      return { path: builtSpecifier(args.importer, target), external: true };
    });
  },
};
rmSync(dist, { recursive: true, force: true });
await esbuild.build({
  entryPoints: modules,
  outbase: root,
  outdir: dist,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  plugins: [rewrite],
  logLevel: 'warning',
});
const cli = outOf(join(root, 'src/cli.ts'));
writeFileSync(cli, `#!/usr/bin/env node\n${readFileSync(cli, 'utf8')}`);
chmodSync(cli, 0o755);

// 3. Type declarations of the library, imports rewritten as above.
try {
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
} catch (e) {
  // tsc still writes declarations when the program has type errors; `npm run typecheck` is where those fail.
  const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim();
  console.error(`build-dist: tsc reported errors (declarations written anyway):\n${out}`);
}
if (!existsSync(join(dist, 'src/index.d.ts'))) {
  console.error('build-dist: tsc wrote no dist/src/index.d.ts');
  process.exit(1);
}
let declarations = 0;
function fixDeclarations(dir) {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) fixDeclarations(p);
    else if (f.endsWith('.d.ts')) {
      const src = join(root, relative(dist, p)).replace(/\.d\.ts$/, '.ts');
      const text = readFileSync(p, 'utf8').replace(/((?:from|import)\s*\(?\s*)(['"])(\.\.?(?:\/[^'"]*)?)\2/g, (m, pre, q, spec) => {
        const target = resolveSource(src, spec);
        return target ? `${pre}${q}${builtSpecifier(src, target)}${q}` : m;
      });
      writeFileSync(p, text);
      declarations++;
    }
  }
}
// The CLI's import of the server brings edge/ into the declaration program too.
for (const d of ['src', 'edge']) if (existsSync(join(dist, d))) fixDeclarations(join(dist, d));

// 4. Files read at run time.
function copy(from, to) {
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(from, to);
}
copy(join(root, 'src/kernels/pool-worker.js'), join(dist, 'src/kernels/pool-worker.js'));
for (const f of ['simd', 'relaxed', 'threads']) copy(join(root, 'build', `${f}.wasm`), join(dist, 'build', `${f}.wasm`));
if (existsSync(join(root, 'build/browser/sparrow.js'))) copy(join(root, 'build/browser/sparrow.js'), join(dist, 'build/browser/sparrow.js'));
for (const f of MODEL_FILES) {
  const p = join(root, 'models/sparrow-mini', f);
  if (existsSync(p)) copy(p, join(dist, 'models/sparrow-mini', f));
}
writeFileSync(stamp, `${new Date().toISOString()}\n`);
console.error(`build-dist: dist/ with ${modules.length} modules, ${declarations} declaration files`);
