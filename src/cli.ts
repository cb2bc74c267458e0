// sparrow's command line: generate | chat | bench | convert | info | serve.
// Runs under Bun (`bun src/cli.ts`), Node through tsx (`node --import tsx src/cli.ts`) and Deno
// (`deno run --allow-read --allow-env src/cli.ts`); it uses only node: modules all three provide.
//
// Exit status: 0 done, 1 failed (bad model file, missing file, …), 2 bad usage. Failures print one
// line to stderr (SPARROW_DEBUG=1 adds the stack).

import { existsSync, fstatSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ArgsError, optionsHelp, parseArgs, type OptionsSpec, type ParsedArgs } from './args';
import { KV_CACHE_TYPES, loadModel, parseAttentionFlag, type LoadOptions } from './index';
import { ConfigError } from './formats/errors';
import type { ChatMessage } from './generate/chat-template';
import { ChatTemplate } from './generate/chat-template';
import type { GenerateParams, LanguageModel, ModelSession } from './generate/language-model';
import { mulberry32, resolveSampling } from './generate/sampler';
import { RequestError } from './generate/errors';
import { ConvertAbortedError, convertToGGUF, CONVERT_DTYPES, CONVERT_FORMATS, type ConvertDType, type ConvertFormat, type ConvertResult } from './convert';
import { ContainerError, decodeContainer, encodeContainer, type Container, type ContainerKind } from './runtime/container';
import { HubError, resolveModelSource } from './formats/hub';

class UsageError extends Error {}
class CliError extends Error {}
/** Stopped by Ctrl-C; exit status 130 as for a shell's SIGINT. */
class InterruptedError extends Error {}

// ---- options ---------------------------------------------------------------------------------------

interface Command {
  usage: string;
  summary: string;
  spec: OptionsSpec;
  positionals: [number, number];
  run(opts: Record<string, any>, pos: string[]): Promise<void>;
}

const MODEL_OPTS: OptionsSpec = {
  model: { type: 'string', arg: 'M', desc: 'checkpoint: HF directory, .gguf / .safetensors file, or URL', defaultText: 'models/sparrow-mini' },
  dtype: { type: 'string', arg: 'D', desc: 'weights in memory (q4_k_m, q5_k_m, q6_k, …: llama.cpp-style per-tensor mixes)', choices: ['auto', 'f32', 'q8_0', 'q4_0', 'q4_k_m', 'q4_k_s', 'q5_k_m', 'q5_k_s', 'q6_k', 'q4_k', 'q5_k'], defaultText: 'auto' },
  'max-context': { type: 'int', arg: 'N', desc: 'positions a session holds', defaultText: 'min(model, 4096)' },
  build: { type: 'string', arg: 'B', desc: 'kernel build', choices: ['auto', 'simd', 'relaxed', 'threads'], defaultText: 'auto' },
  threads: { type: 'int', arg: 'N', desc: 'threads for the matrix products, this one included', min: 1, defaultText: '1' },
  backend: { type: 'string', arg: 'X', desc: 'where the model runs: wasm, webgpu, or auto (WebGPU on a hardware adapter, else WASM)', defaultText: 'wasm' },
  'kv-cache': {
    type: 'string', arg: 'T', choices: KV_CACHE_TYPES, default: 'f32',
    desc: 'attention KV cache type: q8_0 and q4_0 hold 0.27× and 0.14× the bytes of f32 per token, for longer contexts or more sessions in the same memory, at a small logits error',
  },
  attention: {
    type: 'string', arg: 'A', default: 'dense',
    desc: 'attention at decode: dense, or topk[:pages=16,page=64,sinks=4,window=256] — sparse top-k KV pages (Quest) for long contexts: each new token reads the first sinks positions, the last window and the pages best-scoring pages of page positions (prompts stay dense; shorter contexts are exact)',
  },
};

const SAMPLING_OPTS: OptionsSpec = {
  'max-tokens': { type: 'int', arg: 'N', desc: 'most tokens to generate', default: 200 },
  temperature: { type: 'number', arg: 'T', desc: '0 = greedy', defaultText: 'generation_config.json, else greedy' },
  'top-k': { type: 'int', arg: 'K', desc: 'keep the K most likely tokens' },
  'top-p': { type: 'number', arg: 'P', desc: 'nucleus sampling mass' },
  'min-p': { type: 'number', arg: 'P', desc: 'drop tokens below P × the top probability' },
  'repetition-penalty': { type: 'number', arg: 'R', desc: 'transformers-style repetition penalty' },
  'presence-penalty': { type: 'number', arg: 'X', desc: 'OpenAI presence penalty' },
  'frequency-penalty': { type: 'number', arg: 'X', desc: 'OpenAI frequency penalty' },
  seed: { type: 'int', arg: 'S', desc: 'seed of the sampler (same seed, same text; on every runtime with --build simd)' },
  stop: { type: 'list', arg: 'S', desc: 'stop string (repeatable); it is not printed' },
  'diffusion-steps': { type: 'int', arg: 'N', desc: 'block-diffusion models: most denoising steps per canvas', defaultText: 'generation_config.json max_denoising_steps' },
  'entropy-bound': { type: 'number', arg: 'X', desc: 'block-diffusion models: entropy bound of the tokens accepted per step', defaultText: 'generation_config.json' },
};

function helpText(name: string, c: Command): string {
  return `Usage: sparrow ${name} ${c.usage}\n\n${c.summary}\n\nOptions:\n${optionsHelp(c.spec)}`;
}

// ---- shared helpers --------------------------------------------------------------------------------

/** Where the commands write; `runCli` can redirect it (tests run commands in-process). */
export interface CliIO {
  out(s: string): void;
  err(s: string): void;
}
const processIO: CliIO = { out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s) };
let io: CliIO = processIO;
const stdout = (s: string) => io.out(s);
const stderr = (s: string) => io.err(s);

function defaultModelDir(): string {
  return fileURLToPath(new URL('../models/sparrow-mini/', import.meta.url));
}

/**
 * The path or URL to load: the default model directory without --model, else what
 * resolveModelSource makes of it (a URL or existing path as it is, a Hugging Face hub name as its
 * download in the hub cache, fetched now if need be with progress on stderr).
 */
async function resolveModel(m: string | undefined): Promise<string> {
  if (m === undefined) {
    const dir = defaultModelDir();
    if (!existsSync(dir)) throw new CliError(`no --model given and the default model directory ${dir} does not exist`);
    return dir;
  }
  const bar = new Progress('downloading');
  let path: string | undefined;
  try {
    path = await resolveModelSource(m, {
      progress: {
        start: (file, size, from, repo) => stderr(`sparrow: downloading ${repo}/${file}${size === undefined ? '' : ` (${fmtBytes(size)})`}${from ? `, resuming at ${fmtBytes(from)}` : ''}\n`),
        update: (file, done, size) => bar.update(done, size ?? 0, file),
        done: () => bar.end(),
        note: (msg) => {
          bar.end();
          stderr(`sparrow: ${msg}\n`);
        },
      },
    });
  } catch (e) {
    if (!(e instanceof HubError)) throw e;
    if (e.kind === 'not-found' && /no such model repo/.test(e.message)) throw new CliError(`model not found: ${e.message}, nor a local path`);
    throw new CliError(e.message);
  } finally {
    bar.end();
  }
  if (path === undefined) throw new CliError(`model not found: ${m}`);
  return path;
}

/** A one-line bar on stderr, drawn only when stderr is a terminal. */
class Progress {
  private readonly on = !!process.stderr.isTTY;
  private last = 0;
  constructor(private readonly label: string) {}
  update(done: number, total: number, what = ''): void {
    if (!this.on) return;
    const t = Date.now();
    if (done < total && t - this.last < 50) return;
    this.last = t;
    const width = 30;
    const fill = total ? Math.round((done / total) * width) : 0;
    const name = what.length > 40 ? '…' + what.slice(-39) : what;
    stderr(`\r\x1b[K${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${total} ${name}`);
  }
  end(): void {
    if (this.on) stderr('\r\x1b[K');
  }
}

async function load(opts: Record<string, any>, extra: LoadOptions = {}): Promise<{ lm: LanguageModel; path: string; loadMs: number }> {
  const path = await resolveModel(opts.model);
  const bar = new Progress('loading');
  const t0 = performance.now();
  try {
    const lm = await loadModel(path, {
      dtype: opts.dtype,
      build: opts.build,
      maxContext: opts['max-context'],
      threads: opts.threads,
      backend: opts.backend,
      kvCache: opts['kv-cache'],
      attention: opts.attention === undefined ? undefined : parseAttentionFlag(opts.attention),
      onNotice: (m) => stderr(m + '\n'),
      onProgress: (d, t, w) => bar.update(d, t, w),
      ...extra,
    });
    return { lm, path, loadMs: performance.now() - t0 };
  } finally {
    bar.end();
  }
}

/** Sampling flags as GenerateParams, checked before any model is loaded. */
function samplingParams(o: Record<string, any>): GenerateParams {
  const p: GenerateParams = {
    maxTokens: o['max-tokens'],
    temperature: o.temperature,
    topK: o['top-k'],
    topP: o['top-p'],
    minP: o['min-p'],
    repetitionPenalty: o['repetition-penalty'],
    presencePenalty: o['presence-penalty'],
    frequencyPenalty: o['frequency-penalty'],
    seed: o.seed,
    stop: o.stop,
  };
  if (o['diffusion-steps'] !== undefined || o['entropy-bound'] !== undefined) p.diffusion = { steps: o['diffusion-steps'], entropyBound: o['entropy-bound'] };
  resolveSampling({ ...p, seed: p.seed ?? 0 });
  if (!(p.maxTokens! >= 1)) throw new RequestError('maxTokens', `must be an integer ≥ 1, got ${p.maxTokens}`);
  return p;
}

/** Piped or redirected stdin (a FIFO or a file); a terminal, /dev/null or a socket count as none. */
function stdinHasData(): boolean {
  try {
    const st = fstatSync(0);
    return st.isFIFO() || st.isFile();
  } catch {
    return false;
  }
}

async function readStdin(): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of process.stdin as AsyncIterable<Uint8Array | string>) chunks.push(typeof c === 'string' ? new TextEncoder().encode(c) : c);
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const all = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  return new TextDecoder().decode(all);
}

function runtimeName(): string {
  const g = globalThis as any;
  if (g.Bun) return `bun ${g.Bun.version}`;
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  return `node ${process.version.slice(1)}`;
}

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

function fmtCount(n: number): string {
  if (n < 1e3) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(1)}K`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)}M`;
  return `${(n / 1e9).toFixed(2)}B`;
}

/** Layer kinds as runs, and as a repeated period when there is one: "(mamba ×3, attention) ×4". */
export function layerPattern(kinds: string[]): string {
  const runs = (ks: string[]) => {
    const out: string[] = [];
    for (let i = 0; i < ks.length; ) {
      let j = i;
      while (j < ks.length && ks[j] === ks[i]) j++;
      out.push(j - i > 1 ? `${ks[i]} ×${j - i}` : ks[i]);
      i = j;
    }
    return out.join(', ');
  };
  const n = kinds.length;
  for (let p = 2; p <= n / 2; p++) {
    if (n % p) continue;
    if (new Set(kinds.slice(0, p)).size < 2) continue;
    if (kinds.every((k, i) => k === kinds[i % p])) return `(${runs(kinds.slice(0, p))}) ×${n / p}`;
  }
  return runs(kinds);
}

function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  return rows.map(([k, v]) => k.padEnd(w) + v).join('\n') + '\n';
}

// ---- commands --------------------------------------------------------------------------------------

const DEFAULT_PROMPT = 'Once upon a time';

const generate: Command = {
  usage: '[--model M] [PROMPT… | --prompt P | < prompt.txt] [options]',
  summary: `Streams a continuation of the prompt to stdout as it is produced. The prompt is the arguments (joined
by spaces) or --prompt; without either it is read from piped stdin; with none, it is "${DEFAULT_PROMPT}".
The prompt is echoed first when stdout is a terminal.`,
  spec: {
    ...MODEL_OPTS,
    prompt: { type: 'string', arg: 'P', desc: 'prompt text (or give it as arguments)' },
    ...SAMPLING_OPTS,
    echo: { type: 'boolean', desc: 'print the prompt before the continuation' },
    'no-echo': { type: 'boolean', desc: 'never print the prompt' },
    stats: { type: 'boolean', desc: 'print token counts and speed to stderr at the end' },
  },
  positionals: [0, Infinity],
  async run(o, pos) {
    if (pos.length && o.prompt !== undefined) throw new UsageError('generate: give the prompt either as arguments or with --prompt, not both');
    const params = samplingParams(o);
    let prompt: string | undefined = pos.length ? pos.join(' ') : o.prompt;
    if (prompt === undefined && stdinHasData()) prompt = (await readStdin()).replace(/\r?\n$/, '');
    if (!prompt) prompt = DEFAULT_PROMPT;
    const { lm } = await load(o);
    const ac = new AbortController();
    const onInt = () => ac.abort();
    process.on('SIGINT', onInt);
    try {
      const gen = lm.generate(prompt, { ...params, signal: ac.signal });
      if (o.echo || (!o['no-echo'] && process.stdout.isTTY)) stdout(prompt);
      for await (const t of gen) if (t.text) stdout(t.text);
      stdout('\n');
      if (o.stats) {
        const s = gen.stats;
        if (s.denoisingSteps !== undefined) {
          const secs = (s.denoiseMs ?? 0) / 1000;
          stderr(`[${s.promptTokens} prompt tokens, ${s.generatedTokens} generated in ${s.blocks} canvases, ${s.denoisingSteps} denoising steps, finish ${gen.finishReason}, ` +
            `prefill ${s.prefillMs.toFixed(1)} ms, ${(secs ? s.generatedTokens / secs : 0).toFixed(1)} tok/s, ${(secs ? s.denoisingSteps / secs : 0).toFixed(1)} steps/s]\n`);
        } else {
          stderr(`[${s.promptTokens} prompt tokens (${s.cachedTokens} cached), ${s.generatedTokens} generated, finish ${gen.finishReason}, ` +
            `prefill ${s.prefillMs.toFixed(1)} ms, decode ${(s.generatedTokens > 1 ? ((s.generatedTokens - 1) / s.decodeMs) * 1000 : 0).toFixed(1)} tok/s]\n`);
        }
      }
    } finally {
      process.off('SIGINT', onInt);
      await lm.dispose();
    }
  },
};

// A chat file is a container (src/runtime/container.ts) of magic "SPRWCHAT", version 1: the header
// is {messages}, the payload the state snapshot.
const CHAT_FILE: ContainerKind = { magic: 'SPRWCHAT', version: 1, readable: [1] };

/** A conversation and the state after it as chat file bytes. */
export function encodeChatFile(messages: ChatMessage[], snapshot: Uint8Array): Uint8Array {
  return encodeContainer(CHAT_FILE, { messages }, snapshot);
}

/** Chat file bytes read back; errors name the file as `path`. */
export function decodeChatFile(b: Uint8Array, path: string): { messages: ChatMessage[]; snapshot: Uint8Array } {
  let c: Container;
  try {
    c = decodeContainer(CHAT_FILE, b);
  } catch (e) {
    if (!(e instanceof ContainerError)) throw e;
    if (e.problem === 'magic') throw new CliError(`${path} is not a sparrow chat file`);
    if (e.problem === 'version') throw new CliError(`${path}: chat file version ${e.version} is not supported`);
    if (e.problem === 'truncated') throw new CliError(`${path} is truncated`);
    throw new CliError(`${path}: the message list is ${e.message}`);
  }
  const messages = c.header.messages;
  if (!Array.isArray(messages)) throw new CliError(`${path}: messages is ${messages === undefined ? 'missing' : 'not an array'}`);
  checkChatMessages(path, messages);
  return { messages, snapshot: c.payload.slice() };
}

function writeChatFile(path: string, messages: ChatMessage[], snapshot: Uint8Array): void {
  writeFileSync(path, encodeChatFile(messages, snapshot));
}

function readChatFile(path: string): { messages: ChatMessage[]; snapshot: Uint8Array } {
  return decodeChatFile(new Uint8Array(readFileSync(path)), path);
}

/** The roles a chat file may hold (ChatMessage's named roles). */
const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'];

/** Each message is an object with a known role and string content; otherwise a CliError naming the file and the first bad message. */
function checkChatMessages(path: string, messages: unknown[]): asserts messages is ChatMessage[] {
  const kind = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'string' ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v) : typeof v);
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new CliError(`${path}: messages[${i}] is ${kind(m)}, not an object`);
    const { role, content } = m as Record<string, unknown>;
    if (role === undefined) throw new CliError(`${path}: messages[${i}].role is missing`);
    if (typeof role !== 'string' || !CHAT_ROLES.includes(role)) {
      throw new CliError(`${path}: messages[${i}].role must be one of ${CHAT_ROLES.join(', ')}, got ${kind(role)}`);
    }
    if (content === undefined) throw new CliError(`${path}: messages[${i}].content is missing`);
    if (typeof content !== 'string') throw new CliError(`${path}: messages[${i}].content must be a string, got ${kind(content)}`);
  });
}

/** For checkpoints without a chat template: a plain transcript the model can continue. */
const PLAIN_TEMPLATE =
  "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}{% else %}" +
  "{{ (m['role'] == 'user') and 'User: ' or 'Assistant: ' }}{{ m['content'] + '\\n' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

const chat: Command = {
  usage: '[--model M] [options]',
  summary: `Interactive chat in the terminal with the model's own chat template. Commands at the prompt:
  /reset        forget the conversation
  /save FILE    write the conversation and the model state to FILE
  /load FILE    resume a conversation saved with /save
  /exit         quit (also Ctrl-D); Ctrl-C stops a reply`,
  spec: {
    ...MODEL_OPTS,
    system: { type: 'string', arg: 'S', desc: 'system message' },
    ...SAMPLING_OPTS,
    'max-tokens': { type: 'int', arg: 'N', desc: 'most tokens per reply', default: 512 },
  },
  positionals: [0, 0],
  async run(o) {
    const params = samplingParams(o);
    const { lm } = await load(o);
    let template: string | undefined;
    const stops = [...(params.stop as string[] | undefined ?? [])];
    if (!lm.chatTemplate) {
      stderr('note: this model has no chat template; using a plain "User: / Assistant:" transcript\n');
      template = PLAIN_TEMPLATE;
      stops.push('\nUser:');
    }
    const fallback = template ? new ChatTemplate(template) : null;
    const render = (msgs: ChatMessage[]) => (fallback ? fallback.render(msgs) : lm.applyChatTemplate(msgs));
    const system: ChatMessage[] = o.system ? [{ role: 'system', content: o.system }] : [];
    let messages: ChatMessage[] = [...system];
    let session: ModelSession = lm.session();
    const { createInterface } = await import('node:readline');
    const tty = !!process.stdin.isTTY;
    const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
    let current: AbortController | null = null;
    rl.on('SIGINT', () => {
      if (current) current.abort();
      else rl.close();
    });
    const promptUser = () => {
      if (tty) rl.prompt();
    };
    rl.setPrompt('> ');
    promptUser();
    try {
      for await (const raw of rl) {
        const line = raw.trim();
        if (!line) {
          promptUser();
          continue;
        }
        if (line.startsWith('/')) {
          const [cmd, ...rest] = line.split(/\s+/);
          const arg = rest.join(' ');
          try {
            if (cmd === '/exit' || cmd === '/quit') break;
            else if (cmd === '/reset') {
              messages = [...system];
              session.reset();
              stderr('(conversation cleared)\n');
            } else if (cmd === '/save') {
              if (!arg) throw new CliError('/save needs a file name');
              writeChatFile(arg, messages, session.snapshot());
              stderr(`(saved ${messages.length} messages, ${session.pos} tokens of state to ${arg})\n`);
            } else if (cmd === '/load') {
              if (!arg) throw new CliError('/load needs a file name');
              const f = readChatFile(arg);
              const s = lm.restore(f.snapshot);
              session.dispose();
              session = s;
              messages = f.messages;
              stderr(`(loaded ${messages.length} messages, ${session.pos} tokens of state from ${arg})\n`);
            } else throw new CliError(`unknown command ${cmd} (/reset, /save FILE, /load FILE, /exit)`);
          } catch (e) {
            stderr(`error: ${(e as Error).message}\n`);
          }
          promptUser();
          continue;
        }
        messages.push({ role: 'user', content: line });
        current = new AbortController();
        try {
          // Control tokens come from the template's markup only, never from what was typed.
          const ids = fallback ? lm.tokenizer!.encodePlain(render(messages)) : lm.encodeChat(messages);
          const gen = lm.generate(ids, { ...params, stop: stops, session, signal: current.signal });
          for await (const t of gen) if (t.text) stdout(t.text);
          stdout('\n');
          messages.push({ role: 'assistant', content: gen.text.trim() });
        } catch (e) {
          messages.pop();
          stderr(`error: ${(e as Error).message}\n`);
        } finally {
          current = null;
        }
        promptUser();
      }
    } finally {
      rl.close();
      session.dispose();
      await lm.dispose();
    }
  },
};

const bench: Command = {
  usage: '[--model M] [--prompt-len N] [--gen-len N] [--json]',
  summary: 'Measures prefill and decode speed on random prompt tokens (greedy, EOS ignored) after one warm-up run.',
  spec: {
    ...MODEL_OPTS,
    'prompt-len': { type: 'int', arg: 'N', desc: 'prompt tokens', min: 1, default: 128 },
    'gen-len': { type: 'int', arg: 'N', desc: 'generated tokens', min: 1, default: 64 },
    runs: { type: 'int', arg: 'N', desc: 'measured runs; the best is reported', min: 1, default: 3 },
    seed: { type: 'int', arg: 'S', desc: 'seed of the random prompt', default: 0 },
    json: { type: 'boolean', desc: 'print one JSON object instead of the table' },
  },
  positionals: [0, 0],
  async run(o) {
    const promptLen: number = o['prompt-len'], genLen: number = o['gen-len'], runs: number = o.runs;
    const { lm, path, loadMs } = await load(o, { maxContext: o['max-context'] ?? promptLen + genLen });
    try {
      const V = lm.vocabSize;
      const rand = mulberry32(o.seed);
      const prompt = Array.from({ length: promptLen }, () => Math.floor(rand() * V));
      const once = async (p: number[], n: number) => {
        const g = lm.generate(p, { maxTokens: n, temperature: 0, ignoreEos: true });
        await g.result();
        return g.stats;
      };
      await once(prompt.slice(0, Math.min(promptLen, 16)), Math.min(genLen, 4));
      let best = { prefill: 0, decode: 0, ttft: Infinity, prefillMs: 0, decodeMs: 0 };
      // Block-diffusion models: generated tokens and denoising steps per second of the denoising loop.
      let diff: { tokPerS: number; stepsPerS: number; steps: number; tokens: number; blocks: number } | null = null;
      for (let r = 0; r < runs; r++) {
        const s = await once(prompt, genLen);
        const prefill = (promptLen / s.prefillMs) * 1000;
        const decode = genLen > 1 ? ((s.generatedTokens - 1) / s.decodeMs) * 1000 : 0;
        if (prefill > best.prefill) best = { ...best, prefill, prefillMs: s.prefillMs };
        if (s.denoisingSteps !== undefined) {
          const secs = (s.denoiseMs ?? 0) / 1000;
          const d = { tokPerS: secs ? s.generatedTokens / secs : 0, stepsPerS: secs ? s.denoisingSteps / secs : 0, steps: s.denoisingSteps, tokens: s.generatedTokens, blocks: s.blocks ?? 0 };
          if (!diff || d.tokPerS > diff.tokPerS) diff = d;
        } else if (decode > best.decode) best = { ...best, decode, decodeMs: s.decodeMs };
        best.ttft = Math.min(best.ttft, s.ttftMs);
      }
      const info = lm.info();
      const status = lm.status();
      const result = {
        model: path, modelType: info.modelType, build: info.build, backend: info.backend, adapter: info.adapter, runtime: runtimeName(), dtype: o.dtype ?? 'auto', kvCache: o['kv-cache'], attention: info.attention,
        params: info.params, promptTokens: promptLen, genTokens: genLen, loadMs: round(loadMs),
        prefillTokPerS: round(best.prefill), decodeTokPerS: round(diff ? diff.tokPerS : best.decode), ttftMs: round(best.ttft),
        peakArenaBytes: status.arenaPeakBytes, wasmMemoryBytes: status.wasmBytes,
        ...(diff ? { diffusion: { tokPerS: round(diff.tokPerS), stepsPerS: round(diff.stepsPerS), steps: diff.steps, tokens: diff.tokens, canvases: diff.blocks } } : {}),
      };
      if (o.json) stdout(JSON.stringify(result) + '\n');
      else {
        stdout(table([
          ['model', `${path} (${info.modelType}, ${fmtCount(info.params)} params)`],
          ['runtime', `${result.runtime}, ${info.backend === 'webgpu' ? `WebGPU (${info.adapter})` : `${info.build} build`}, dtype ${result.dtype}, KV cache ${result.kvCache}${result.attention === 'dense' ? '' : `, attention ${result.attention}`}`],
          ['load', `${result.loadMs} ms`],
          ['prefill', `${result.prefillTokPerS} tok/s  (${promptLen} tokens in ${round(best.prefillMs)} ms)`],
          ...(diff
            ? [['diffusion', `${round(diff.tokPerS)} tok/s, ${round(diff.stepsPerS)} steps/s  (${diff.tokens} tokens in ${diff.blocks} canvases, ${diff.steps} denoising steps)`] as [string, string]]
            : [['decode', `${result.decodeTokPerS} tok/s  (${genLen} tokens)`] as [string, string]]),
          ['time to first token', `${result.ttftMs} ms`],
          ['peak arena', fmtBytes(status.arenaPeakBytes)],
        ]));
      }
    } finally {
      await lm.dispose();
    }
  },
};

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

const convert: Command = {
  usage: 'IN OUT --dtype q8_0|q4_0|f16|f32|q4_k_m|q5_k_m|q6_k|…',
  summary: `Converts a checkpoint (HF directory, safetensors or GGUF) to a GGUF file in sparrow's convention: HF
tensor names, config / tokenizer / generation config as metadata, weights in the given dtype (norms, biases
and other small tensors stay f32, as when quantizing on load). Tensors already quantized in the source keep
their type unless the dtype is f32. q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k (q4_k, q5_k: aliases of the _m ones)
choose the type of each tensor as llama.cpp's file types of those names do. With --format llama.cpp the file
is in llama.cpp's own layout (its tensor names, hyperparameter keys and tokenizer metadata). OUT is written under a temporary name and renamed
when complete; an OUT that is one of the input's files is refused.`,
  spec: {
    dtype: { type: 'string', arg: 'D', desc: 'required: the dtype of the weights written', choices: CONVERT_DTYPES },
    format: { type: 'string', arg: 'F', desc: "the GGUF layout: sparrow (HF names, the default) or llama.cpp", choices: CONVERT_FORMATS, default: 'sparrow' },
  },
  positionals: [2, 2],
  async run(o, [input, output]) {
    if (!o.dtype) throw new UsageError(`convert: --dtype is required (${CONVERT_DTYPES.join(', ')})`);
    if (!existsSync(input)) throw new CliError(`input not found: ${input}`);
    const bar = new Progress('converting');
    const ac = new AbortController();
    const onInt = () => ac.abort();
    process.on('SIGINT', onInt);
    let r: ConvertResult;
    try {
      r = await convertToGGUF(input, output, { dtype: o.dtype as ConvertDType, format: o.format as ConvertFormat, signal: ac.signal, onProgress: (d, t, w) => bar.update(d, t, w) });
    } catch (e) {
      if (e instanceof ConvertAbortedError) throw new InterruptedError(e.message);
      throw e;
    } finally {
      process.off('SIGINT', onInt);
      bar.end();
    }
    const kept = Object.entries(r.keptQuantized);
    const nKept = kept.reduce((a, [, n]) => a + n, 0);
    if (nKept) {
      const why = o.dtype === 'f16'
        ? 'f16 cannot hold their values exactly; --dtype f32 dequantizes them exactly'
        : 'quantized blocks are copied, never re-quantized (as when the source is loaded with this dtype); --dtype f32 dequantizes them';
      stderr(`note: ${nKept} of ${r.tensors} tensors keep their quantized type from the source (${kept.map(([k, n]) => `${n} ${k}`).join(', ')}), not ${o.dtype}: ${why}\n`);
    }
    const byType = Object.entries(r.tensorsByDType).map(([k, v]) => `${v} ${k}`).join(', ');
    const keptNote = nKept ? `; ${kept.map(([k, n]) => `${n} ${k}`).join(', ')} kept from the source instead of ${o.dtype}` : '';
    stdout(`wrote ${output}: ${r.tensors} tensors, ${fmtBytes(r.bytes)} (${byType}${keptNote})\n`);
  },
};

const info: Command = {
  usage: '[M] [--json]',
  summary: 'Architecture, layer pattern, parameter count, bytes by dtype and state size per token of a checkpoint.',
  spec: { ...MODEL_OPTS, json: { type: 'boolean', desc: 'print JSON' } },
  positionals: [0, 1],
  async run(o, pos) {
    const { lm, path } = await load({ ...o, model: pos[0] ?? o.model }, { maxContext: o['max-context'] });
    try {
      const i = lm.info();
      if (o.json) {
        stdout(JSON.stringify({ model: path, ...i }) + '\n');
        return;
      }
      const total = Object.values(i.bytesByDType).reduce((a, b) => a + b, 0);
      stdout(table([
        ['model', path],
        ['architecture', i.modelType],
        ['layers', `${i.layers.length}: ${layerPattern(i.layers)}`],
        ['parameters', `${fmtCount(i.params)} (${i.params})`],
        ['weights', `${fmtBytes(total)}: ${Object.entries(i.bytesByDType).map(([k, v]) => `${k} ${fmtBytes(v)}`).join(', ')}`],
        ['vocab / hidden', `${i.vocabSize} / ${i.hidden}`],
        ['state', `${fmtBytes(i.stateBytesFixed)} fixed + ${fmtBytes(i.stateBytesPerToken)} per token${i.kvCache === 'f32' ? '' : ` (KV cache ${i.kvCache})`}`],
        ['max context', `${i.maxContext} (full state ${fmtBytes(i.stateBytesFixed + i.stateBytesPerToken * i.maxContext)})`],
        ['attention', i.attention],
        ['kernel build', i.build],
        ['arena', fmtBytes(i.arenaBytes)],
        ['tokenizer', i.tokenizer ? `yes (EOS ${i.eosTokenIds.join(', ') || 'none'})` : 'no'],
        ['chat template', i.chatTemplate ? 'yes' : 'no'],
      ]));
    } finally {
      await lm.dispose();
    }
  },
};

const serve: Command = {
  usage: '[options of the server]',
  summary: 'Starts the local OpenAI-compatible HTTP server (edge/serve-local.ts); its options are its own.',
  spec: {},
  positionals: [0, Infinity],
  async run() {
    /* replaced in main(): serve passes its arguments through untouched */
  },
};

const COMMANDS: Record<string, Command> = { generate, chat, bench, convert, info, serve };

const USAGE = `sparrow — efficient LLMs on WebAssembly (Bun, Node, Deno)

Usage: sparrow <command> [options]

Commands:
  generate   stream a continuation of a prompt
  chat       interactive chat with the model's chat template
  bench      prefill / decode speed, time to first token, peak memory
  convert    checkpoint → GGUF (q8_0, q4_0, f16, f32)
  info       architecture, parameters, memory and state size of a model
  serve      local OpenAI-compatible server

Run "sparrow <command> --help" for the options of a command.
`;

async function runServe(args: string[]): Promise<void> {
  let server: typeof import('../edge/serve-local');
  try {
    server = await import('../edge/serve-local');
  } catch (e) {
    // A copy without edge/ has no server; a server whose own imports fail reports that instead.
    const ext = import.meta.url.endsWith('.js') ? '.js' : '.ts';
    const path = fileURLToPath(new URL(`../edge/serve-local${ext}`, import.meta.url));
    if (!existsSync(path)) throw new CliError(`serve: the local server (${path}) is not available in this checkout`);
    throw e;
  }
  await server.main(args);
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name) {
    stderr(USAGE);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    stdout(USAGE);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) throw new UsageError(`unknown command ${JSON.stringify(name)} (generate, chat, bench, convert, info, serve; see sparrow --help)`);
  if (name === 'serve') {
    await runServe(rest);
    return 0;
  }
  let parsed: ParsedArgs<OptionsSpec>;
  try {
    parsed = parseArgs(rest, cmd.spec, { helpHint: `sparrow ${name} --help` });
  } catch (e) {
    if (e instanceof ArgsError) throw new UsageError(`${name}: ${e.message}`);
    throw e;
  }
  if (parsed.help) {
    stdout(helpText(name, cmd));
    return 0;
  }
  const { values: opts, positionals: pos } = parsed;
  const [lo, hi] = cmd.positionals;
  if (pos.length < lo) throw new UsageError(`${name}: expected ${cmd.usage}`);
  if (pos.length > hi) throw new UsageError(`${name}: unexpected argument ${JSON.stringify(pos[hi])}`);
  try {
    await cmd.run(opts, pos);
  } catch (e) {
    // A request parameter or load option named in the library's words becomes the flag that set it.
    if (e instanceof RequestError || (e instanceof ConfigError && e.field.startsWith('options.'))) {
      const [top, ...sub] = e.field.replace(/^options\./, '').split('.');
      const flag = top.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      if (flag in cmd.spec) throw new UsageError(`${name}: --${flag} ${sub.length ? `${sub.join('.')}: ` : ''}${e.detail}`);
    }
    throw e;
  }
  return 0;
}

function isMain(): boolean {
  const g = globalThis as any;
  if (g.Deno) return (import.meta as any).main === true;
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    const self = fileURLToPath(import.meta.url);
    if (self === argv1 || self.replace(/\.[jt]s$/, '') === argv1.replace(/\.[jt]s$/, '')) return true;
    // Run through a link (npm's node_modules/.bin/sparrow): argv[1] is the link, import.meta.url its target.
    return existsSync(argv1) && realpathSync(argv1) === realpathSync(self);
  } catch {
    return false;
  }
}

/** Runs a command line and returns the exit status; a failure is one line on `err`. */
export async function runCli(argv: string[], to: CliIO = processIO): Promise<number> {
  const prev = io;
  io = to;
  try {
    return await main(argv);
  } catch (e) {
    const msg = (e as Error)?.message ?? String(e);
    stderr(`sparrow: ${msg.split('\n')[0]}\n`);
    if ((globalThis as any).process?.env?.SPARROW_DEBUG) stderr(`${(e as Error)?.stack}\n`);
    return e instanceof UsageError ? 2 : e instanceof InterruptedError ? 130 : 1;
  } finally {
    io = prev;
  }
}

if (isMain()) {
  // A reader that stops early (`| head`) closes the pipe: that ends the command, it is not an error.
  process.stdout.on?.('error', (e: any) => {
    if (e?.code === 'EPIPE') process.exit(0);
    throw e;
  });
  runCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
