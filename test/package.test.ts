// The installable package: tools/build-dist.mjs builds dist/, `npm pack` packs it, and the tarball,
// laid out as npm installs it (node_modules/@sparrow-llm/sparrow, its dependencies beside it, the
// bin linked from node_modules/.bin), runs on plain Node without tsx: the `sparrow` bin prints its
// help and generates, the library imports by its package name, and a TypeScript consumer
// type-checks against the shipped declarations. No network: the dependencies are this checkout's.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyModelDir } from './tiny-models';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NAME = '@sparrow-llm/sparrow';

let work: string;
let project: string;
let pkgDir: string;
let packed: { files: { path: string; mode: number }[]; filename: string };
let model: string;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command with a plain environment: Node's directory first on PATH, no loader options. */
function run(cmd: string, args: string[], cwd: string): Promise<Run> {
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, NODE_OPTIONS: '', SPARROW_WASM: 'simd' };
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'sparrow-pkg-'));
  model = tinyModelDir({ dir: join(work, 'tiny') });
  const build = spawnSync(process.execPath, [join(ROOT, 'tools/build-dist.mjs'), '--if-stale'], { cwd: ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`build-dist failed:\n${build.stderr}`);
  // dist/ is built above; --ignore-scripts keeps `npm pack` from running prepare (the kernel builds) again.
  const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8' });
  if (pack.status !== 0) throw new Error(`npm pack failed:\n${pack.stderr}`);
  packed = JSON.parse(pack.stdout)[0];
  // What `npm install <tarball>` lays out, without the registry.
  project = join(work, 'project');
  pkgDir = join(project, 'node_modules', NAME);
  mkdirSync(pkgDir, { recursive: true });
  const tar = spawnSync('tar', ['-xzf', join(work, packed.filename), '-C', pkgDir, '--strip-components=1'], { encoding: 'utf8' });
  if (tar.status !== 0) throw new Error(`tar failed:\n${tar.stderr}`);
  const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  for (const dep of [...Object.keys(manifest.dependencies ?? {}), '@types/node']) {
    mkdirSync(dirname(join(project, 'node_modules', dep)), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules', dep), join(project, 'node_modules', dep));
  }
  mkdirSync(join(project, 'node_modules/.bin'));
  symlinkSync(join('..', NAME, manifest.bin.sparrow), join(project, 'node_modules/.bin/sparrow'));
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: { [NAME]: manifest.version } }));
}, 180_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the npm package', () => {
  it('packs the built JavaScript, declarations, kernels and default model, and no sources', () => {
    const files = packed.files.map((f) => f.path);
    for (const f of ['package.json', 'README.md', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli.js', 'dist/src/kernels/pool-worker.js',
      'dist/edge/serve-local.js', 'dist/build/simd.wasm', 'dist/build/relaxed.wasm', 'dist/build/threads.wasm',
      'dist/models/sparrow-mini/model.q8_0.gguf', 'dist/models/sparrow-mini/tokenizer.json']) {
      expect(files, f).toContain(f);
    }
    expect(files.filter((f) => /\.ts$/.test(f) && !/\.d\.ts$/.test(f))).toEqual([]);
    expect(files).not.toContain('dist/.built');
    expect(files.filter((f) => !f.startsWith('dist/') && !['package.json', 'README.md'].includes(f))).toEqual([]);
    expect(packed.files.find((f) => f.path === 'dist/src/cli.js')!.mode & 0o111).toBeTruthy();
    const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    expect(manifest.name).toBe(NAME);
    expect(manifest.bin).toEqual({ sparrow: 'dist/src/cli.js' });
    expect(manifest.exports['.']).toEqual({ types: './dist/src/index.d.ts', default: './dist/src/index.js' });
    expect(readFileSync(join(pkgDir, 'dist/src/cli.js'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('the sparrow bin runs on plain Node: --help, generate with a positional prompt, the default model', async () => {
    const bin = join(project, 'node_modules/.bin/sparrow');
    const help = await run(bin, ['--help'], project);
    expect([help.status, help.stderr]).toEqual([0, '']);
    expect(help.stdout).toMatch(/^sparrow — [\s\S]*Commands:[\s\S]*generate[\s\S]*convert/);
    const args = ['--model', model, '--max-tokens', '12', '--seed', '1', '--temperature', '1', 'Once upon a time'];
    const [fromBin, fromSource] = await Promise.all([
      run(bin, ['generate', ...args], project),
      run(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'generate', ...args], ROOT),
    ]);
    expect([fromBin.status, fromBin.stderr]).toEqual([0, '']);
    expect(fromBin.stdout.length).toBeGreaterThan(2);
    expect(fromBin.stdout).toBe(fromSource.stdout);
    const mini = await run(bin, ['generate', '--max-tokens', '6', '--seed', '3'], project);
    expect([mini.status, mini.stderr]).toEqual([0, '']);
    expect(mini.stdout.trim().length).toBeGreaterThan(0);
    const info = await run(bin, ['info', '--json'], project);
    expect(JSON.parse(info.stdout).model).toBe(join(pkgDir, 'dist/models/sparrow-mini/'));
  });

  it('the sparrow bin starts the local server from the package (sparrow serve)', async () => {
    const bin = join(project, 'node_modules/.bin/sparrow');
    const help = await run(bin, ['serve', '--help'], project);
    expect([help.status, help.stderr]).toEqual([0, '']);
    expect(help.stdout).toMatch(/^Usage: sparrow serve[\s\S]*--session-dir D/);
    const bad = await run(bin, ['serve', '--max-queue', 'many'], project);
    expect([bad.status, bad.stdout, bad.stderr]).toEqual([2, '', 'sparrow serve: --max-queue must be an integer ≥ 0, got "many"\n']);
  });

  it('imports by its package name from plain Node', async () => {
    writeFileSync(join(project, 'use.mjs'), `
import { loadModel, supportedModelTypes, convertToGGUF } from '${NAME}';
const lm = await loadModel(process.argv[2], { maxContext: 64 });
let text = '';
for await (const t of lm.generate('Once upon a time', { maxTokens: 8, temperature: 0, ignoreEos: true })) text += t.text;
console.log(JSON.stringify({ types: supportedModelTypes().includes('llama'), convert: typeof convertToGGUF, build: lm.info().build, text }));
await lm.dispose();
`);
    const r = await run(process.execPath, ['use.mjs', model], project);
    expect([r.status, r.stderr]).toEqual([0, '']);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ types: true, convert: 'function', build: 'simd' });
    expect(j.text.length).toBeGreaterThan(0);
  });

  it('a TypeScript consumer type-checks against the shipped declarations', async () => {
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] },
      files: ['use.ts'],
    }));
    writeFileSync(join(project, 'use.ts'), `
import { loadModel, type ChatMessage, type LanguageModel, FormatError } from '${NAME}';
const lm: LanguageModel = await loadModel('model.gguf', { dtype: 'q8_0', maxContext: 64 });
const messages: ChatMessage[] = [{ role: 'user', content: 'Hello' }];
for await (const piece of lm.chat(messages, { maxTokens: 4 })) {
  const text: string = piece.text;
  void text;
}
const session = lm.session();
const bytes: Uint8Array = session.snapshot();
void bytes;
void (new FormatError('field', 'detail') instanceof Error);
// @ts-expect-error dtype is one of the load dtypes
await loadModel('model.gguf', { dtype: 'q5_x' });
export {};
`);
    const r = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(project, 'tsconfig.json')], project);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
