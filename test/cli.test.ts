// The CLI as users run it: the real `bun` binary and Node through tsx (and Deno when present) on a
// tiny random checkpoint. Same seed → same text on every runtime; bad usage and missing files give
// one-line errors and the documented exit status; convert → GGUF → generate equals generating from
// the source directory quantized on load.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
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
    [['convert', 'a'], 2, /^sparrow: convert: expected IN OUT --dtype q8_0\|q4_0\|f16\|f32$/],
    [['convert', 'a', 'b'], 2, /^sparrow: convert: --dtype is required/],
    [['frobnicate'], 2, /^sparrow: unknown command "frobnicate"/],
    [['chat', '--dtype', 'q5'], 2, /^sparrow: chat: --dtype must be auto, f32, q8_0 or q4_0, got "q5"$/],
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

describe('info, bench, chat', () => {
  it('info prints the architecture table', async () => {
    const r = await cli('node', ['info', model]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/architecture\s+llama/);
    expect(r.stdout).toMatch(/layers\s+2: attention ×2/);
    expect(r.stdout).toMatch(/state\s+0 B fixed \+ 512 B per token/);
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
});

describe('layer pattern', () => {
  it('prints runs and repeated periods', () => {
    expect(layerPattern(['attention', 'attention'])).toBe('attention ×2');
    const period = ['mamba', 'mamba', 'mamba', 'attention'];
    expect(layerPattern([...period, ...period, ...period])).toBe('(mamba ×3, attention) ×3');
    expect(layerPattern(['a', 'b', 'b', 'a', 'a'])).toBe('a, b ×2, a ×2');
  });
});
