// The CLI as users run it: the real `bun` binary and Node through tsx (and Deno when present) on a
// tiny random checkpoint. Same seed → same text on every runtime; bad usage and missing files give
// one-line errors and the documented exit status; convert → GGUF → generate equals generating from
// the source directory quantized on load.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyModelDir } from './tiny-models';
import { layerPattern, runCli } from '../src/cli';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'src/cli.ts');
const BIN = (name: string) => join(ROOT, 'node_modules/.bin', name);

type Runtime = 'node' | 'bun' | 'deno';
const COMMAND: Record<Runtime, string[]> = {
  node: [process.execPath, '--import', 'tsx', CLI],
  bun: [BIN('bun'), CLI],
  deno: [BIN('deno'), 'run', '--allow-read', '--allow-write', '--allow-env', CLI],
};

function available(rt: Runtime): boolean {
  if (rt === 'node') return true;
  const r = spawnSync(BIN(rt), ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; stdin is the given text, or /dev/null. */
function cli(rt: Runtime, args: string[], input?: string, env: Record<string, string> = {}): Promise<Run> {
  const [cmd, ...pre] = COMMAND[rt];
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, [...pre, ...args], { cwd: ROOT, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } });
    let stdout = '', stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
    p.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
    if (input !== undefined) p.stdin!.end(input);
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** The same command line in this process (usage checks need no new runtime). */
async function inProcess(args: string[]): Promise<Run> {
  let stdout = '', stderr = '';
  const status = await runCli(args, { out: (t) => (stdout += t), err: (t) => (stderr += t) });
  return { status, stdout, stderr };
}

let work: string;
let model: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'sparrow-cli-'));
  model = tinyModelDir({ dir: join(work, 'tiny') });
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const GEN = ['--prompt', 'Once upon a time', '--max-tokens', '24', '--seed', '7', '--temperature', '0.9', '--top-k', '40'];

describe('runtimes agree', () => {
  it('bun is installed (npm rebuild bun fixes a skipped postinstall)', () => {
    expect(available('bun')).toBe(true);
  });

  // The sampler is integer PRNG + exact float64 arithmetic, so equal logits give equal text. The
  // baseline SIMD build gives equal logits on every engine; the relaxed build does not (V8 fuses
  // f32x4.relaxed_madd, JavaScriptCore does not), so these runs pin SPARROW_WASM=simd.
  const SIMD = { SPARROW_WASM: 'simd' };
  const runtimes = (): Runtime[] => ['node', 'bun', ...(available('deno') ? ['deno' as const] : [])];

  it('generate with a fixed seed prints the same text under Node+tsx, Bun and Deno', async () => {
    const rts = runtimes();
    const runs = await Promise.all(rts.map((rt) => cli(rt, ['generate', '--model', model, ...GEN], undefined, SIMD)));
    for (const [i, r] of runs.entries()) {
      expect(r.stderr, rts[i]).toBe('');
      expect(r.status, rts[i]).toBe(0);
    }
    expect(runs[0].stdout.length).toBeGreaterThan(2);
    for (const r of runs.slice(1)) expect(r.stdout).toBe(runs[0].stdout);
    // Another seed, another text.
    const other = await cli('node', ['generate', '--model', model, ...GEN.slice(0, -4), '--seed', '8'], undefined, SIMD);
    expect(other.stdout).not.toBe(runs[0].stdout);
  });

  it.skipIf(!existsSync(join(ROOT, 'models/sparrow-mini/config.json')))('the default model (npm start) gives the same story on every runtime', async () => {
    const rts = runtimes();
    const args = ['generate', '--max-tokens', '40', '--seed', '3'];
    const runs = await Promise.all(rts.map((rt) => cli(rt, args, undefined, SIMD)));
    for (const [i, r] of runs.entries()) expect([rts[i], r.status, r.stderr]).toEqual([rts[i], 0, '']);
    expect(runs[0].stdout.trim().split(/\s+/).length).toBeGreaterThan(10);
    for (const r of runs.slice(1)) expect(r.stdout).toBe(runs[0].stdout);
  });
});

describe('generate', () => {
  it('reads the prompt from piped stdin, and defaults to "Once upon a time"', async () => {
    const args = ['generate', '--model', model, '--max-tokens', '12', '--seed', '1', '--temperature', '1'];
    const [flag, piped, none] = await Promise.all([
      cli('node', [...args, '--prompt', 'Once upon a time']),
      cli('node', args, 'Once upon a time\n'),
      cli('node', args),
    ]);
    expect(piped.stdout).toBe(flag.stdout);
    expect(none.stdout).toBe(flag.stdout);
    const echoed = await cli('node', [...args, '--echo']);
    expect(echoed.stdout).toBe('Once upon a time' + flag.stdout);
  });

  it('takes the prompt as arguments, joined by spaces (README: generate --backend auto "Once upon a time")', async () => {
    const args = ['generate', '--model', model, '--max-tokens', '12', '--seed', '1', '--temperature', '1'];
    const [flag, one, words, readme] = await Promise.all([
      cli('node', [...args, '--prompt', 'Once upon a time']),
      cli('node', [...args, 'Once upon a time']),
      cli('node', [...args, 'Once', 'upon', 'a', 'time']),
      cli('node', ['generate', '--backend', 'wasm', 'Once upon a time', '--model', model, '--max-tokens', '12', '--seed', '1', '--temperature', '1']),
    ]);
    for (const r of [flag, one, words, readme]) expect([r.status, r.stderr]).toEqual([0, '']);
    expect(flag.stdout.length).toBeGreaterThan(2);
    expect(one.stdout).toBe(flag.stdout);
    expect(words.stdout).toBe(flag.stdout);
    expect(readme.stdout).toBe(flag.stdout);
    // Arguments win over piped stdin; --echo prints them joined.
    const piped = await cli('node', [...args, '--echo', 'Once', 'upon', 'a', 'time'], 'Something else entirely\n');
    expect(piped.stdout).toBe('Once upon a time' + flag.stdout);
    // Both forms at once is a usage error.
    const both = await inProcess(['generate', '--prompt', 'Once upon', 'a time']);
    expect([both.status, both.stdout, both.stderr]).toEqual([2, '', 'sparrow: generate: give the prompt either as arguments or with --prompt, not both\n']);
  });

  it('--stop ends the text before the stop string', async () => {
    const base = await cli('node', ['generate', '--model', model, ...GEN]);
    const text = base.stdout.replace(/\n$/, '');
    const stop = text.slice(5, 7);
    const r = await cli('node', ['generate', '--model', model, ...GEN, '--stop', stop, '--stop', 'zzzz']);
    expect(r.stdout).toBe(text.slice(0, text.indexOf(stop)) + '\n');
  });
});

describe('usage errors and missing files: one line on stderr, no stack', () => {
  const cases: [string[], number, RegExp][] = [
    [['generate', '--bogus'], 2, /^sparrow: generate: unknown option --bogus \(see sparrow generate --help\)$/],
    [['generate', '--max-tokens', 'many'], 2, /^sparrow: generate: option --max-tokens needs an integer, got "many"$/],
    [['generate', '--temperature'], 2, /^sparrow: generate: option --temperature needs a value \(T\)$/],
    [['generate', '--top-p', '3'], 2, /^sparrow: generate: --top-p must be a number in \[0, 1\], got 3$/],
    [['generate', '--model', '/no/such/model'], 1, /^sparrow: model not found: \/no\/such\/model$/],
    [['info', '/no/such/model.gguf'], 1, /^sparrow: model not found: \/no\/such\/model\.gguf$/],
    [['convert', '/no/such/dir', 'x.gguf', '--dtype', 'q8_0'], 1, /^sparrow: input not found: \/no\/such\/dir$/],
    [['convert', 'a'], 2, /^sparrow: convert: expected IN OUT --dtype q8_0\|q4_0\|f16\|f32\|q4_k_m\|q5_k_m\|q6_k\|…$/],
    [['convert', 'a', 'b'], 2, /^sparrow: convert: --dtype is required/],
    [['frobnicate'], 2, /^sparrow: unknown command "frobnicate"/],
    [['chat', '--dtype', 'q5'], 2, /^sparrow: chat: --dtype must be auto, f32, q8_0, q4_0, q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k, q4_k or q5_k, got "q5"$/],
    [['bench', '--kv-cache', 'q5_0'], 2, /^sparrow: bench: --kv-cache must be f32, q8_0 or q4_0, got "q5_0"$/],
    [['generate', '--model', 'test/fixtures/parity/mamba1', '--kv-cache', 'q8_0', '--prompt', 'x'], 2, /^sparrow: generate: --kv-cache 'q8_0' quantizes attention KV caches, and model type mamba has none/],
    [['info', CLI], 1, /^sparrow: .*neither GGUF nor safetensors/],
  ];
  for (const [args, status, re] of cases) {
    it(args.join(' ').replace(ROOT, ''), async () => {
      const r = await inProcess(args);
      expect(r.status).toBe(status);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(re);
    });
  }

  it('the real binaries print the same single line and exit status', async () => {
    const [node, bun] = await Promise.all([cli('node', ['generate', '--bogus']), cli('bun', ['convert', '/no/such/dir', 'x.gguf', '--dtype', 'q8_0'])]);
    expect([node.status, node.stderr]).toEqual([2, 'sparrow: generate: unknown option --bogus (see sparrow generate --help)\n']);
    expect([bun.status, bun.stderr]).toEqual([1, 'sparrow: input not found: /no/such/dir\n']);
  });

  it('the default model directory is named when it is missing', async () => {
    if (existsSync(join(ROOT, 'models/sparrow-mini'))) return;
    const r = await cli('bun', ['generate']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(/^sparrow: no --model given and the default model directory .*models\/sparrow-mini\/? does not exist$/);
  });

  it('serve without the server module says so', async () => {
    if (existsSync(join(ROOT, 'edge/serve-local.ts'))) return;
    const r = await inProcess(['serve']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(/^sparrow: serve: the local server .*edge\/serve-local\.ts\) is not available/);
  });

  it('--help for every command', async () => {
    for (const c of ['generate', 'chat', 'bench', 'convert', 'info']) {
      const r = await inProcess([c, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: sparrow ${c}`));
      expect(r.stdout).toMatch(/--help/);
    }
    const top = await cli('node', ['--help']);
    expect(top.status).toBe(0);
    expect(top.stdout).toMatch(/Commands:[\s\S]*generate[\s\S]*serve/);
    const none = await inProcess([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/^sparrow — /);
  });
});

describe('convert', () => {
  for (const dtype of ['q8_0', 'q4_0'] as const) {
    it(`${dtype}: generate from the GGUF equals generate from the directory quantized on load`, async () => {
      const out = join(work, `tiny.${dtype}.gguf`);
      const c = await cli('node', ['convert', model, out, '--dtype', dtype]);
      expect(c.status).toBe(0);
      expect(c.stdout).toMatch(new RegExp(`^wrote .*tiny\\.${dtype}\\.gguf: 21 tensors`));
      const [fromGguf, fromDir] = await Promise.all([
        cli('bun', ['generate', '--model', out, ...GEN]),
        cli('bun', ['generate', '--model', model, '--dtype', dtype, ...GEN]),
      ]);
      expect(fromGguf.stderr).toBe('');
      expect(fromGguf.stdout).toBe(fromDir.stdout);
      const info = JSON.parse((await cli('node', ['info', out, '--json'])).stdout);
      expect(info.modelType).toBe('llama');
      expect(info.bytesByDType[dtype]).toBeGreaterThan(0);
      expect(info.tokenizer && info.chatTemplate).toBe(true);
    });
  }
});

describe('convert: output safety and kept quantized tensors', () => {
  const digest = (dir: string) => Object.fromEntries(readdirSync(dir).sort().map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]));

  it('refuses an OUT that is the input (or one of its files) and leaves the input as it was', async () => {
    const dir = tinyModelDir({ dir: join(work, 'same-path') });
    const before = digest(dir);
    const st = join(dir, 'model.safetensors');
    for (const [input, output] of [[st, st], [dir, st], [dir, join(dir, 'config.json')], [st, `${dir}/./model.safetensors`]]) {
      const r = await inProcess(['convert', input, output, '--dtype', 'q8_0']);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr).toMatch(/^sparrow: output .* is the input file .*; writing it would destroy the checkpoint being converted: choose another output path\n$/);
    }
    expect(digest(dir)).toEqual(before);
  });

  it('--dtype f16 of a Q8_0 GGUF says how many tensors keep Q8_0 and why, and the summary says so', async () => {
    const q8 = join(work, 'kept.q8_0.gguf');
    const a = await cli('node', ['convert', model, q8, '--dtype', 'q8_0']);
    expect([a.status, a.stderr]).toEqual([0, '']);
    const n = Number(/\((\d+) q8_0, (\d+) f32\)/.exec(a.stdout)?.[1]);
    expect(n).toBeGreaterThan(0);
    const f16 = await cli('node', ['convert', q8, join(work, 'kept.f16.gguf'), '--dtype', 'f16']);
    expect(f16.status).toBe(0);
    expect(f16.stderr).toBe(`note: ${n} of 21 tensors keep their quantized type from the source (${n} q8_0), not f16: f16 cannot hold their values exactly; --dtype f32 dequantizes them exactly\n`);
    expect(f16.stdout).toMatch(new RegExp(`^wrote .*kept\\.f16\\.gguf: 21 tensors, .* \\(${n} q8_0, ${21 - n} f32; ${n} q8_0 kept from the source instead of f16\\)\n$`));
    const q4 = await cli('node', ['convert', q8, join(work, 'kept.q4_0.gguf'), '--dtype', 'q4_0']);
    expect(q4.stderr).toMatch(new RegExp(`^note: ${n} of 21 tensors keep their quantized type from the source \\(${n} q8_0\\), not q4_0: quantized blocks are copied, never re-quantized`));
    const f32 = await cli('node', ['convert', q8, join(work, 'kept.f32.gguf'), '--dtype', 'f32']);
    expect([f32.status, f32.stderr]).toEqual([0, '']);
    expect(f32.stdout).toMatch(/: 21 tensors, .* \(21 f32\)\n$/);
  });

  const MINI = join(ROOT, 'models/sparrow-mini/model.q8_0.gguf');
  it.skipIf(!existsSync(MINI))('Ctrl-C during a conversion exits 130 and leaves neither OUT nor a temporary file', async () => {
    // The default model to f32 writes ~47 MB; SIGINT is sent once the temporary file appears. A
    // machine fast enough to finish first gets another try.
    let interrupted: Run | null = null;
    for (let attempt = 0; attempt < 3 && !interrupted; attempt++) {
      const dir = mkdtempSync(join(work, 'sigint-'));
      const out = join(dir, 'mini.f32.gguf');
      const p = spawn(process.execPath, ['--import', 'tsx', CLI, 'convert', MINI, out, '--dtype', 'f32'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '', stderr = '';
      p.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
      p.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
      const closed = new Promise<number | null>((r) => p.on('close', r));
      let running = true;
      void closed.then(() => (running = false));
      while (running && !readdirSync(dir).some((f) => f.endsWith('.tmp'))) await new Promise((r) => setTimeout(r, 2));
      if (running) p.kill('SIGINT');
      const status = await closed;
      if (status === 0) continue;
      interrupted = { status, stdout, stderr };
      expect(readdirSync(dir)).toEqual([]);
    }
    expect(interrupted).not.toBeNull();
    expect(interrupted!.status).toBe(130);
    expect(interrupted!.stdout).toBe('');
    expect(interrupted!.stderr).toMatch(/^sparrow: conversion to .*mini\.f32\.gguf was interrupted; .*mini\.f32\.gguf was not written\n$/);
  });
});

describe('info, bench, chat', () => {
  it('info prints the architecture table', async () => {
    const r = await cli('node', ['info', model]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/architecture\s+llama/);
    expect(r.stdout).toMatch(/layers\s+2: attention ×2/);
    expect(r.stdout).toMatch(/state\s+0 B fixed \+ 512 B per token/);
  });

  it('--kv-cache q4_0: info shows the smaller state per token, generate runs on it', async () => {
    const i = await inProcess(['info', model, '--kv-cache', 'q4_0']);
    expect(i.status).toBe(0);
    // 2 layers × (K + V) × 2 kv heads × one 18-byte block (head_dim 16, padded to 32).
    expect(i.stdout).toMatch(/state\s+0 B fixed \+ 144 B per token \(KV cache q4_0\)/);
    const g = await inProcess(['generate', '--model', model, '--kv-cache', 'q8_0', ...GEN]);
    expect(g.status).toBe(0);
    expect(g.stdout.trim().length).toBeGreaterThan(0);
  });

  it('bench --json reports speeds, time to first token and peak memory', async () => {
    const r = await cli('bun', ['bench', '--model', model, '--prompt-len', '32', '--gen-len', '8', '--runs', '1', '--json']);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    for (const k of ['prefillTokPerS', 'decodeTokPerS', 'ttftMs', 'peakArenaBytes']) expect(j[k]).toBeGreaterThan(0);
    expect(j.runtime).toMatch(/^bun /);
    const t = await cli('node', ['bench', '--model', model, '--prompt-len', '16', '--gen-len', '4', '--runs', '1']);
    expect(t.stdout).toMatch(/prefill\s+[\d.]+ tok\/s/);
    expect(t.stdout).toMatch(/peak arena/);
  });

  it('chat: /save then /load continues the same conversation as never stopping', async () => {
    const file = join(work, 'conv.chat');
    const args = ['chat', '--model', model, '--max-tokens', '8', '--seed', '2', '--temperature', '0.8'];
    // Saved under Bun, resumed under Node: the baseline build keeps their logits equal.
    const simd = { SPARROW_WASM: 'simd' };
    const straight = await cli('node', args, 'Hello there\nWhat next?\n', simd);
    const saved = await cli('bun', args, `Hello there\n/save ${file}\n/exit\n`, simd);
    expect(saved.stderr).toMatch(/saved 2 messages/);
    const resumed = await cli('node', args, `/load ${file}\nWhat next?\n`, simd);
    expect(resumed.stderr).toMatch(/loaded 2 messages/);
    const [reply1, reply2] = straight.stdout.split('\n');
    expect(saved.stdout.split('\n')[0]).toBe(reply1);
    expect(resumed.stdout.split('\n')[0]).toBe(reply2);
    const reset = await cli('node', args, 'Hello there\n/reset\nWhat next?\n');
    expect(reset.stderr).toMatch(/conversation cleared/);
  });

  it('chat: /load refuses a file with malformed messages, naming the file and the message, and the conversation goes on', async () => {
    const args = ['chat', '--model', model, '--max-tokens', '8', '--seed', '2', '--temperature', '0.8'];
    const good = join(work, 'good.chat');
    const saved = await cli('node', args, `Hello there\n/save ${good}\n/exit\n`);
    expect(saved.stderr).toMatch(/saved 2 messages/);
    // The same file with another JSON part: "SPRWCHAT" · u32 version · u32 JSON length · JSON · state.
    const bytes = readFileSync(good);
    const jsonLen = bytes.readUInt32LE(12);
    const state = bytes.subarray(16 + jsonLen);
    const withJson = (name: string, json: string) => {
      const j = Buffer.from(json);
      const head = Buffer.alloc(16);
      bytes.copy(head, 0, 0, 12);
      head.writeUInt32LE(j.length, 12);
      const path = join(work, name);
      writeFileSync(path, Buffer.concat([head, j, state]));
      return path;
    };
    const hello = { role: 'user', content: 'Hello there' };
    const bad: [string, string, RegExp][] = [
      ['empty-object.chat', JSON.stringify({ messages: [{}] }), /messages\[0\]\.role is missing/],
      ['number-content.chat', JSON.stringify({ messages: [hello, { role: 'assistant', content: 5 }] }), /messages\[1\]\.content must be a string, got number/],
      ['unknown-role.chat', JSON.stringify({ messages: [hello, { role: 'bot', content: 'hi' }] }), /messages\[1\]\.role must be one of system, user, assistant, tool, got "bot"/],
      ['not-object.chat', JSON.stringify({ messages: ['Hello there'] }), /messages\[0\] is "Hello there", not an object/],
      ['not-array.chat', JSON.stringify({ messages: { role: 'user', content: 'x' } }), /messages is not an array/],
      ['bad-json.chat', '{"messages": [', /the message list is not valid JSON/],
    ];
    const files = bad.map(([name, json]) => withJson(name, json));
    const straight = await cli('node', args, 'Hello there\nWhat next?\n');
    const r = await cli('node', args, `Hello there\n${files.map((f) => `/load ${f}\n`).join('')}What next?\n`);
    const errors = r.stderr.split('\n').filter(Boolean);
    expect(errors).toHaveLength(bad.length);
    errors.forEach((line, i) => {
      expect(line.startsWith(`error: ${files[i]}: `), line).toBe(true);
      expect(line).toMatch(bad[i][2]);
    });
    // The refused loads left the conversation as it was: the second reply is the uninterrupted one.
    expect(r.stdout).toBe(straight.stdout);
  });
});

describe('layer pattern', () => {
  it('prints runs and repeated periods', () => {
    expect(layerPattern(['attention', 'attention'])).toBe('attention ×2');
    const period = ['mamba', 'mamba', 'mamba', 'attention'];
    expect(layerPattern([...period, ...period, ...period])).toBe('(mamba ×3, attention) ×3');
    expect(layerPattern(['a', 'b', 'b', 'a', 'a'])).toBe('a, b ×2, a ×2');
  });
});
