// A loaded model with its tokenizer, chat template and generation config: streaming generation,
// chat, and sessions that keep state between calls (prefix reuse, snapshot / restore).

import type { SnapshotOptions } from '../runtime/state';
import type { BuildName } from '../kernels/runtime';
import type { Model, ModelInfo } from '../models/model';
import type { SequenceSession, SessionFactory } from '../runtime/session';
import type { GpuModel } from '../webgpu/model';
import type { ChatMessage, RenderOptions } from './chat-template';
import { ChatTemplate } from './chat-template';
import { ContextLengthError, RequestError } from './errors';
import { Grammar, GrammarConstraint, GrammarError, TokenVocabulary } from './grammar/index';
import { logProb, resolveSampling, Sampler, topLogProbs, type SamplingParams } from './sampler';
import { StopStrings, TextStream } from './stream';
import { yieldToHost } from './host';
import { batcherFor, batcherOf, forwardStep, setBatching } from './batcher';
import { escapeRegExp, TokenLimitError, type AsyncEncodeOptions, type Tokenizer } from './tokenizer';
import { isDiffusionNet } from '../models/diffusion_gemma';
import { startDiffusion } from './diffusion-generation';

export interface GenerateParams extends SamplingParams {
  /** Most tokens to generate. Default: generation_config max_new_tokens / max_length, else until the context is full. */
  maxTokens?: number;
  /** Text that ends generation; it and what follows are not emitted. */
  stop?: string | string[];
  /** Token ids that end generation, besides EOS. */
  stopTokenIds?: number[];
  /** Keeps going through EOS (benchmarks). */
  ignoreEos?: boolean;
  /** Reports each token's log-probability under the model (before penalties and warping). */
  logprobs?: boolean;
  /** Also reports the this-many (0–20) most likely tokens at each step with their log-probabilities. */
  topLogprobs?: number;
  signal?: AbortSignal;
  /**
   * Constrains the generated text to a grammar: a Grammar (Grammar.fromGbnf, .fromJsonSchema,
   * .fromRegex, .jsonObject) or GBNF text. Tokens the grammar cannot take are masked before
   * sampling; EOS and stop tokens are allowed only where the text is complete, and generation
   * stops once nothing more may follow. Reuse one Grammar object across generations: the masks it
   * has computed are kept with it.
   */
  grammar?: Grammar | string;
  /** Constrains the text to JSON valid under this JSON Schema (`true`: any JSON object). */
  jsonSchema?: Record<string, unknown> | boolean;
  /** Constrains the text to match this regular expression as a whole. */
  regex?: string;
  /** Writes special tokens other than the ones that end generation into the text (e.g. a tool-call marker). Default false. */
  specialTokens?: boolean;
  /** Runs in this session: its cached tokens are reused when they begin the new prompt. */
  session?: ModelSession;
  /** For a text prompt: add BOS etc. as the tokenizer's post-processor does. Default true. */
  addSpecialTokens?: boolean;
  /**
   * Block-diffusion models only (generate/diffusion.ts): overrides of the generation_config knobs.
   * There, temperature 0 takes the most probable token as each position's proposal (1 or unset: drawn).
   */
  diffusion?: DiffusionKnobs;
}

/** The knobs of a diffusion generation (generation_config.json names in comments). */
export interface DiffusionKnobs {
  /** max_denoising_steps */
  steps?: number;
  /** sampler_config.entropy_bound */
  entropyBound?: number;
  /** t_min, t_max (the linear temperature schedule) */
  tMin?: number;
  tMax?: number;
  /** stability_threshold, confidence_threshold (adaptive stopping) */
  stabilityThreshold?: number;
  confidenceThreshold?: number;
}

export interface ChatParams extends GenerateParams, RenderOptions {
  /** Name of the template, when tokenizer_config.json holds several. */
  template?: string;
}

export interface GeneratedToken {
  token: number;
  /** Text this token completes; '' while a character or a possible stop string is incomplete. */
  text: string;
  logprob?: number;
  /** With topLogprobs: the most likely tokens at this step, most likely first. */
  topLogprobs?: { token: number; logprob: number }[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationStats {
  promptTokens: number;
  /** Prompt tokens whose state came from the session instead of being run again. */
  cachedTokens: number;
  generatedTokens: number;
  prefillMs: number;
  /** From the call to the first token. */
  ttftMs: number;
  /** From the first token to the last. */
  decodeMs: number;
  /**
   * Block-diffusion models: denoising steps (denoiser passes) run, canvases committed, and the time
   * from the end of the prompt's pass to the last committed canvas (denoising and canvas encoding).
   */
  denoisingSteps?: number;
  blocks?: number;
  denoiseMs?: number;
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  stats: GenerationStats;
}

/** Most greedy steps per GPU batch (one read-back each). */
const GPU_BATCH = 32;

const now = (): number => globalThis.performance?.now() ?? Date.now();

export { yieldToHost };

/** One generation: iterate it for tokens (once); the fields fill in as it runs. */
export class Generation implements AsyncIterable<GeneratedToken> {
  finishReason: FinishReason | null = null;
  text = '';
  readonly tokens: number[] = [];
  readonly stats: GenerationStats;
  private started = false;

  constructor(promptTokens: number, private readonly body: (g: Generation) => AsyncGenerator<GeneratedToken>) {
    this.stats = { promptTokens, cachedTokens: 0, generatedTokens: 0, prefillMs: 0, ttftMs: 0, decodeMs: 0 };
  }

  [Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    if (this.started) throw new RequestError('generation', 'can be iterated only once');
    this.started = true;
    return this.body(this);
  }

  /** Runs to the end and returns the whole text. */
  async result(): Promise<GenerationResult> {
    for await (const _ of this);
    return { text: this.text, tokens: this.tokens.slice(), finishReason: this.finishReason ?? 'abort', stats: { ...this.stats } };
  }
}

function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * A sequence's state across calls. Before a prompt runs, the session keeps the longest prefix of it
 * that it can: all of its tokens when they begin the prompt; otherwise attention caches are cut back
 * to the common prefix, while recurrent state (which cannot be cut) returns to the checkpoint taken
 * after the previous prompt when that is still a prefix, or starts over.
 *
 * `inner` is the backend's session (the WASM model's or the WebGPU one's), behind one interface;
 * snapshotAsync() works on both (snapshot() is the synchronous form, where the state is in host memory).
 */
export class ModelSession {
  /** Logits after the last token fed (so a prompt equal to the cached tokens needs no run). */
  lastLogits: Float32Array | null = null;
  /** Logits at the inner session's checkpoint. */
  private checkpointLogits: Float32Array | null = null;
  busy = false;
  private disposed = false;

  constructor(readonly model: Model, public inner: SequenceSession) {}

  /** Token ids whose state this session holds. */
  get tokens(): readonly number[] {
    return this.inner.tokens;
  }

  get pos(): number {
    return this.inner.pos;
  }

  /** Whether the state can be cut back to `pos` tokens (every region is a plain or unwrapped KV cache). */
  canTruncate(pos: number): boolean {
    return this.inner.canRewind(pos);
  }

  /**
   * How reuse(ids) would keep a prefix: all the tokens held, cut back to a shorter prefix, back to
   * the checkpoint, or none; `keep` is the prefix length.
   */
  private reusePlan(ids: ArrayLike<number>): { how: 'all' | 'rewind' | 'checkpoint' | 'none'; keep: number } {
    const s = this.inner;
    const lcp = commonPrefix(s.tokens, ids);
    if (lcp === s.tokens.length && (lcp < ids.length || this.lastLogits)) return { how: 'all', keep: lcp };
    // The prompt's last token must run again unless its logits are at hand.
    const keep = Math.min(lcp, ids.length - 1);
    if (s.canRewind(keep)) return { how: 'rewind', keep };
    const cp = s.checkpointPos;
    if (cp !== null && cp > 0 && cp <= lcp && (cp < ids.length || this.checkpointLogits)) return { how: 'checkpoint', keep: cp };
    return { how: 'none', keep: 0 };
  }

  /** How many leading tokens of `ids` reuse(ids) would keep; changes nothing. */
  usablePrefix(ids: ArrayLike<number>): number {
    return this.reusePlan(ids).keep;
  }

  /** Keeps the longest usable prefix of `ids` and returns its length (< ids.length unless lastLogits hold). */
  reuse(ids: ArrayLike<number>): number {
    const { how, keep } = this.reusePlan(ids);
    if (how === 'rewind') {
      this.inner.rewind(keep);
      this.lastLogits = null;
    } else if (how === 'checkpoint') {
      this.inner.restoreCheckpoint();
      this.lastLogits = keep === ids.length ? this.checkpointLogits : null;
    } else if (how === 'none') this.reset();
    return keep;
  }

  /** Feeds tokens in chunks, yielding to the host between chunks; null when aborted. */
  async feed(ids: number[], signal?: AbortSignal): Promise<Float32Array | null> {
    // With batching on, the model's step batcher feeds the chunks between other sessions' steps.
    const batcher = batcherFor(this.model, this.inner);
    if (batcher) return batcher.run(this.inner, ids, { signal, onChunk: (l) => (this.lastLogits = l) });
    const C = this.inner.prefillChunk;
    let logits: Float32Array | null = null;
    for (let i = 0; i < ids.length; i += C) {
      if (i > 0) {
        await yieldToHost();
        if (signal?.aborted) return null;
      }
      logits = await this.inner.forward(ids.slice(i, i + C));
      this.lastLogits = logits;
    }
    return logits;
  }

  /** Remembers the state at the end of a prompt when it cannot be truncated later. */
  markCheckpoint(): void {
    if (this.inner.canRewind(0)) return;
    this.inner.markCheckpoint();
    this.checkpointLogits = this.lastLogits;
  }

  /** The session's state as versioned, checksummed bytes (they name the model; see LanguageModel.restore); `{ dtype: 'f16' }` halves them at f16 precision. */
  snapshot(opts: SnapshotOptions = {}): Uint8Array {
    if (!this.inner.snapshotSync) {
      throw new RequestError('session', "snapshot() is synchronous and needs backend 'wasm'; on the webgpu backend use `await session.snapshotAsync()` (same bytes, restorable on either backend)");
    }
    return this.inner.snapshotSync(opts);
  }

  /** snapshot() on either backend: a GPU session's state is read back, in the same format (restorable by a WASM or a GPU model). */
  snapshotAsync(opts: SnapshotOptions = {}): Promise<Uint8Array> {
    return this.inner.snapshotAsync(opts);
  }

  reset(): void {
    this.inner.reset();
    this.lastLogits = null;
    this.checkpointLogits = null;
  }

  /** An independent copy of this session's state. */
  fork(): ModelSession {
    const s = new ModelSession(this.model, this.inner.fork());
    s.lastLogits = this.lastLogits?.slice() ?? null;
    if (s.inner.checkpointPos !== null) s.checkpointLogits = this.checkpointLogits;
    return s;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.inner.dispose();
  }
}

function idList(v: unknown): number[] {
  return (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).filter((x): x is number => Number.isInteger(x));
}

export interface LanguageModelInfo extends ModelInfo {
  tokenizer: boolean;
  chatTemplate: boolean;
  eosTokenIds: number[];
  backend: 'wasm' | 'webgpu';
  /** The WebGPU adapter, on the webgpu backend. */
  adapter?: string;
}

/** Memory and session use of a loaded model at one moment (servers report it). */
export interface LanguageModelStatus {
  /** The kernel build the model runs on. */
  build: BuildName;
  /** Size of the model's WebAssembly memory. */
  wasmBytes: number;
  /** Bytes of the arena in use now (weights, scratch, session state slots). */
  arenaBytes: number;
  /** Most bytes the arena has held. */
  arenaPeakBytes: number;
  /** Sessions holding a state slot. */
  sessionsInUse: number;
  /** Bytes of one session's state slot (sized for maxContext). */
  sessionBytes: number;
  maxContext: number;
}

export class LanguageModel {
  /** EOS ids: generation_config eos_token_id (int or list), config eos_token_id, else the tokenizer's. */
  readonly eosTokenIds: ReadonlySet<number>;

  constructor(
    readonly model: Model,
    readonly tokenizer: Tokenizer | null,
    readonly chatTemplate: ChatTemplate | null,
    readonly generationConfig: Record<string, any> = {},
    private readonly tokenizerConfig: Record<string, any> = {},
    /** The WebGPU forward pass sessions run on (backend 'webgpu'), or null for WASM. */
    readonly gpu: GpuModel | null = null,
  ) {
    const eos = new Set([...idList(generationConfig.eos_token_id), ...idList(model.config.eos_token_id)]);
    if (!eos.size && tokenizer?.eosId !== undefined) eos.add(tokenizer.eosId);
    this.eosTokenIds = eos;
  }

  get maxContext(): number {
    return this.model.maxContext;
  }

  /** A block-diffusion model (generate/diffusion.ts): no sessions, log-probabilities, grammars or tools. */
  get diffusion(): boolean {
    return isDiffusionNet(this.model.net);
  }

  /** Token ids are below this. */
  get vocabSize(): number {
    return this.model.net.vocabSize;
  }

  /** Hash of the config and weights; snapshots name it, and restore only into a model with the same. */
  get hash(): string {
    return this.model.hash;
  }

  status(): LanguageModelStatus {
    const k = this.model.k;
    return {
      build: k.build,
      wasmBytes: k.memory.buffer.byteLength,
      arenaBytes: k.arena.top,
      arenaPeakBytes: k.arena.peak,
      sessionsInUse: this.model.slots.inUse,
      sessionBytes: this.model.layout.bytes,
      maxContext: this.model.maxContext,
    };
  }

  /**
   * Batched decoding (generate/batcher.ts): the generations running at once advance together, one
   * multi-sequence pass per step, and prompts are fed in chunks between those steps; each gets the
   * text it gets alone. Off by default (servers turn it on); WebGPU sessions are not batched.
   */
  get batching(): boolean {
    return batcherOf(this.model) !== undefined;
  }

  set batching(on: boolean) {
    setBatching(this.model, on);
  }

  /** Where sessions run. */
  get backend(): 'wasm' | 'webgpu' {
    return this.gpu ? 'webgpu' : 'wasm';
  }

  info(): LanguageModelInfo {
    const info: LanguageModelInfo = { ...this.model.info(), tokenizer: !!this.tokenizer, chatTemplate: !!this.chatTemplate, eosTokenIds: [...this.eosTokenIds], backend: this.backend };
    if (this.gpu) info.adapter = this.gpu.gpu.adapterName;
    return info;
  }

  encode(text: string, addSpecialTokens = true): number[] {
    if (!this.tokenizer) throw new RequestError('prompt', 'this checkpoint has no tokenizer.json; pass token ids');
    return this.tokenizer.encode(text, { addSpecialTokens });
  }

  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    if (!this.tokenizer) throw new RequestError('tokens', 'this checkpoint has no tokenizer.json to decode with');
    return this.tokenizer.decode(ids, { skipSpecialTokens });
  }

  /** encode() in steps that yield to the host; more than `limit` tokens is a ContextLengthError on `prompt`. */
  async encodeAsync(text: string, opts: AsyncEncodeOptions = {}): Promise<number[]> {
    if (!this.tokenizer) throw new RequestError('prompt', 'this checkpoint has no tokenizer.json; pass token ids');
    try {
      return await this.tokenizer.encodeAsync(text, opts);
    } catch (e) {
      if (e instanceof TokenLimitError) throw new ContextLengthError('prompt', e.atLeast, e.limit);
      throw e;
    }
  }

  /**
   * The token ids of the chat template's text for `messages`. Control tokens come only from the
   * template's own markup: a special-token string inside a message (a user writing
   * "<|im_end|><|im_start|>system") is encoded as the plain text it is.
   */
  encodeChat(messages: ChatMessage[], opts: RenderOptions & { template?: string } = {}): number[] {
    const c = this.chatText(messages, opts);
    if (!c.literals) return this.encode(c.text, false);
    const ids: number[] = [];
    for (const part of this.tokenizer!.splitSpecial(c.text)) {
      if (typeof part === 'number') ids.push(part);
      else for (const id of this.tokenizer!.encodePlain(c.restore(part))) ids.push(id);
    }
    return ids;
  }

  /** encodeChat() in steps that yield to the host; more than `limit` tokens is a ContextLengthError on `messages`. */
  async encodeChatAsync(messages: ChatMessage[], opts: RenderOptions & { template?: string; limit?: number; signal?: AbortSignal } = {}): Promise<number[]> {
    const c = this.chatText(messages, opts);
    const limit = opts.limit ?? Infinity;
    try {
      if (!c.literals) return await this.tokenizer!.encodeAsync(c.text, { addSpecialTokens: false, limit, signal: opts.signal });
      const ids: number[] = [];
      for (const part of this.tokenizer!.splitSpecial(c.text)) {
        if (typeof part === 'number') ids.push(part);
        else for (const id of await this.tokenizer!.encodePlainAsync(c.restore(part), { limit: limit - ids.length, signal: opts.signal })) ids.push(id);
        if (ids.length > limit) throw new TokenLimitError(ids.length, limit);
      }
      return ids;
    } catch (e) {
      if (e instanceof TokenLimitError) throw new ContextLengthError('messages', e.atLeast, limit);
      throw e;
    }
  }

  /**
   * The rendered chat. When a message holds special-token strings, they are rendered as markers
   * (private-use characters that occur nowhere else) and `restore` turns a piece of the text back
   * into the original characters; `literals` is then set.
   */
  private chatText(messages: ChatMessage[], opts: RenderOptions & { template?: string }): { text: string; literals: boolean; restore: (s: string) => string } {
    if (!this.tokenizer) throw new RequestError('prompt', 'this checkpoint has no tokenizer.json; pass token ids');
    const specials = this.tokenizer.specialTokens.filter((t) => t.length > 0);
    const strings: string[] = [];
    collectStrings(messages, strings);
    const hit = specials.length > 0 && strings.some((s) => specials.some((t) => s.includes(t)));
    if (!hit) return { text: this.applyChatTemplate(messages, opts), literals: false, restore: (s) => s };
    const seen = strings.join('') + (this.chatTemplate?.source ?? '');
    let mark = 0xe000;
    while (mark <= 0xf8ff && seen.includes(String.fromCharCode(mark))) mark++;
    if (mark > 0xf8ff) throw new RequestError('messages', 'use every private-use character; they cannot be told apart from control-token markers');
    const m = String.fromCharCode(mark);
    const order = [...specials].sort((a, b) => b.length - a.length);
    const pattern = new RegExp(order.map(escapeRegExp).join('|'), 'g');
    const toMarkers = (s: string) => s.replace(pattern, (t) => `${m}${order.indexOf(t)}${m}`);
    const back = new RegExp(`${m}(\\d+)${m}`, 'g');
    const text = this.applyChatTemplate(mapStrings(messages, toMarkers) as ChatMessage[], opts);
    return { text, literals: true, restore: (s) => s.replace(back, (_, i) => order[Number(i)]) };
  }

  /** The chat template's text for these messages (with the assistant turn opened by default). */
  applyChatTemplate(messages: ChatMessage[], opts: RenderOptions & { template?: string } = {}): string {
    let t = this.chatTemplate;
    if (opts.template !== undefined) t = ChatTemplate.fromConfig(this.tokenizerConfig, undefined, opts.template);
    if (!t) throw new RequestError('messages', 'this checkpoint has no chat template (tokenizer_config.json chat_template)');
    return t.render(messages, opts);
  }

  /** Where sessions run: the WebGPU model, else the WASM one. */
  private get sessions(): SessionFactory {
    return this.gpu ?? this.model;
  }

  session(): ModelSession {
    return new ModelSession(this.model, this.sessions.newSession());
  }

  /** A session resumed from snapshot bytes of this same model, taken on either backend. */
  restore(bytes: Uint8Array): ModelSession {
    return new ModelSession(this.model, this.sessions.restore(bytes));
  }

  /** Sampling defaults from generation_config.json: sampling only when it sets do_sample, as transformers does. */
  private defaults(): SamplingParams {
    const gc = this.generationConfig;
    const d: SamplingParams = { temperature: 0 };
    if (gc.do_sample === true) {
      d.temperature = typeof gc.temperature === 'number' ? gc.temperature : 1;
      if (Number.isInteger(gc.top_k)) d.topK = gc.top_k;
      if (typeof gc.top_p === 'number') d.topP = gc.top_p;
      if (typeof gc.min_p === 'number') d.minP = gc.min_p;
    }
    if (typeof gc.repetition_penalty === 'number') d.repetitionPenalty = gc.repetition_penalty;
    return d;
  }

  private vocabulary: TokenVocabulary | null = null;

  /** The grammar a generation's parameters ask for (one of grammar, jsonSchema, regex) and the parameter that gave it, or null. */
  private grammarOf(p: GenerateParams): { grammar: Grammar; field: 'grammar' | 'jsonSchema' | 'regex' } | null {
    const given = (['grammar', 'jsonSchema', 'regex'] as const).filter((k) => p[k] !== undefined && p[k] !== false);
    if (!given.length) return null;
    if (given.length > 1) throw new RequestError(given[1], `give one of grammar, jsonSchema and regex, not ${given.join(' and ')}`);
    const field = given[0];
    if (!this.tokenizer) throw new RequestError(field, 'a constrained generation needs the tokenizer (tokenizer.json) to know what each token spells');
    try {
      return { grammar: this.compileGrammar(p), field };
    } catch (e) {
      if (e instanceof GrammarError) throw new RequestError(field, e.message);
      throw e;
    }
  }

  private compileGrammar(p: GenerateParams): Grammar {
    if (p.grammar instanceof Grammar) return p.grammar;
    if (typeof p.grammar === 'string') return Grammar.fromGbnf(p.grammar);
    if (p.grammar !== undefined) throw new RequestError('grammar', 'must be a Grammar or GBNF text');
    if (p.jsonSchema === true) return Grammar.jsonObject();
    if (p.jsonSchema !== undefined) {
      if (typeof p.jsonSchema !== 'object' || p.jsonSchema === null || Array.isArray(p.jsonSchema)) throw new RequestError('jsonSchema', 'must be a JSON Schema object or true');
      return Grammar.fromJsonSchema(p.jsonSchema);
    }
    if (typeof p.regex !== 'string') throw new RequestError('regex', 'must be a string');
    return Grammar.fromRegex(p.regex);
  }

  /** Every token's bytes as a trie, for grammar masks (built on first use). */
  private tokenVocabulary(): TokenVocabulary {
    this.vocabulary ??= TokenVocabulary.fromTokenizer(this.tokenizer!);
    return this.vocabulary;
  }

  private maxTokensFor(promptLen: number, p: GenerateParams): number {
    const gc = this.generationConfig;
    const room = this.model.maxContext - promptLen + 1;
    let n = p.maxTokens;
    if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new RequestError('maxTokens', `must be an integer ≥ 1, got ${JSON.stringify(n)}`);
    if (n === undefined && Number.isInteger(gc.max_new_tokens)) n = gc.max_new_tokens;
    if (n === undefined && Number.isInteger(gc.max_length)) n = Math.max(1, gc.max_length - promptLen);
    return Math.min(n ?? room, room);
  }

  /** Streams a continuation of `prompt` (text, encoded with the tokenizer, or token ids). */
  generate(prompt: string | ArrayLike<number>, params: GenerateParams = {}): Generation {
    const ids = typeof prompt === 'string' ? this.encode(prompt, params.addSpecialTokens ?? true) : Array.from(prompt);
    return this.start(ids, params);
  }

  /** Streams the assistant's reply to `messages`, rendered with the checkpoint's chat template. */
  chat(messages: ChatMessage[], params: ChatParams = {}): Generation {
    // The template writes BOS itself (transformers tokenizes its output without special tokens).
    return this.start(this.encodeChat(messages, params), params);
  }

  private start(ids: number[], params: GenerateParams): Generation {
    const V = this.vocabSize;
    if (!ids.length) throw new RequestError('prompt', 'is empty (no tokens)');
    for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= V) throw new RequestError('prompt', `token id ${id} is outside the vocabulary [0, ${V})`);
    if (ids.length > this.model.maxContext) throw new ContextLengthError('prompt', ids.length, this.model.maxContext, true);
    if (isDiffusionNet(this.model.net)) return startDiffusion(this, ids, params);
    if (params.diffusion !== undefined) throw new RequestError('diffusion', `applies to block-diffusion models only; model type ${this.model.modelType} is autoregressive`);
    const sampling = resolveSampling({ ...this.defaults(), ...definedOnly(params) });
    const maxTokens = this.maxTokensFor(ids.length, params);
    const top = params.topLogprobs;
    if (top !== undefined && (!Number.isInteger(top) || top < 0 || top > 20)) throw new RequestError('topLogprobs', `must be an integer from 0 to 20, got ${JSON.stringify(top)}`);
    const stops = typeof params.stop === 'string' ? [params.stop] : params.stop ?? [];
    if (!Array.isArray(stops) || stops.some((s) => typeof s !== 'string')) throw new RequestError('stop', 'must be a string or a list of strings');
    const stopIds = new Set(idList(params.stopTokenIds));
    const eos = params.ignoreEos ? new Set<number>() : this.eosTokenIds;
    const grammar = this.grammarOf(params);
    const session = params.session;
    if (session && session.model !== this.model) throw new RequestError('session', 'belongs to another model');
    if (session?.busy) throw new RequestError('session', 'is already generating');
    const self = this;

    return new Generation(ids.length, async function* (g) {
      const t0 = now();
      if (session?.busy) throw new RequestError('session', 'is already generating');
      const s = session ?? self.session();
      s.busy = true;
      let tFirst = 0;
      try {
        if (params.signal?.aborted) return;
        const cached = s.reuse(ids);
        g.stats.cachedTokens = cached;
        let logits = cached === ids.length ? s.lastLogits : await s.feed(ids.slice(cached), params.signal);
        if (!logits) return;
        if (session) s.markCheckpoint();
        g.stats.prefillMs = now() - t0;
        const sampler = new Sampler(sampling, ids);
        // A fresh constraint per generation (its grammar's cached masks are shared).
        const constraint = grammar ? new GrammarConstraint(grammar.grammar, self.tokenVocabulary(), [...eos, ...stopIds]) : null;
        /** The next token: sampled from the logits, among the tokens the grammar allows. */
        const pick = (logits: Float32Array): number => {
          const l = logits.slice();
          if (constraint) {
            constraint.apply(l);
            if (!l.some((x) => x > -Infinity)) throw new RequestError(grammar!.field, 'no token of the vocabulary continues the text the grammar allows');
          }
          return sampler.next(l);
        };
        const text = self.tokenizer ? new TextStream(self.tokenizer, ids, !params.specialTokens) : null;
        const stop = new StopStrings(stops);
        /** Accounts for generated token i (the state then holds the prompt and tokens 0 … i−1). */
        const take = (tok: number, i: number, logits: Float32Array | null): GeneratedToken => {
          sampler.accept(tok);
          constraint?.accept(tok);
          g.tokens.push(tok);
          g.stats.generatedTokens++;
          const ends = eos.has(tok) || stopIds.has(tok);
          let out = stop.push(ends || !text ? '' : text.push(tok));
          let finish: FinishReason | null = stop.stopped !== null || ends || constraint?.done ? 'stop' : null;
          if (!finish && (i + 1 >= maxTokens || ids.length + i >= self.model.maxContext)) finish = 'length';
          if (finish && stop.stopped === null) {
            // A character still unfinished when the generation ends is not text: it is left out.
            out += stop.push(text?.flush(true) ?? '');
            out += stop.flush();
            if (stop.stopped !== null) finish = 'stop';
          }
          g.text += out;
          if (!tFirst) {
            tFirst = now();
            g.stats.ttftMs = tFirst - t0;
          }
          g.stats.decodeMs = now() - tFirst;
          const ev: GeneratedToken = { token: tok, text: out };
          if (params.logprobs && logits) ev.logprob = logProb(logits, tok);
          if (params.topLogprobs && logits) ev.topLogprobs = topLogProbs(logits, params.topLogprobs).map((t) => ({ token: t.id, logprob: t.logprob }));
          if (finish) g.finishReason = finish;
          return ev;
        };
        const inner = s.inner;
        if (inner.greedy && sampler.plainGreedy && !params.logprobs && !params.topLogprobs && !constraint) {
          // Greedy on the GPU: batches of steps whose argmax runs there; two in flight, so reading
          // one back overlaps computing the next. The state is cut back to the tokens kept at the end.
          const first = pick(logits);
          const ev = take(first, 0, logits);
          yield ev;
          if (g.finishReason) return;
          const budget = Math.min(maxTokens - 1, self.model.maxContext - inner.pos);
          let i = 1;
          try {
            for await (const toks of inner.greedy(first, budget, GPU_BATCH)) {
              for (const tok of toks) {
                const e = take(tok, i++, null);
                yield e;
                if (g.finishReason) return;
              }
              await yieldToHost();
              if (params.signal?.aborted) return;
            }
            return;
          } finally {
            // Batches in flight have finished (the loop waits for them on leaving).
            s.lastLogits = null;
            inner.rewind(ids.length + Math.max(g.tokens.length - 1, 0));
          }
        }
        for (let i = 0; ; i++) {
          const tok = pick(logits);
          const ev = take(tok, i, logits);
          yield ev;
          if (g.finishReason) return;
          await yieldToHost();
          if (params.signal?.aborted) return;
          logits = await forwardStep(s.model, s.inner, [tok]);
          s.lastLogits = logits;
        }
      } finally {
        if (g.finishReason === null) g.finishReason = 'abort';
        s.busy = false;
        if (!session) s.dispose();
      }
    });
  }

  private readonly cleanups: (() => unknown)[] = [];

  /** Runs `fn` when the model is disposed (e.g. stopping a worker pool). */
  onDispose(fn: () => unknown): void {
    this.cleanups.push(fn);
  }

  /** Releases the checkpoint and any workers; await it to know the workers have stopped. */
  async dispose(): Promise<void> {
    const fns = this.cleanups.splice(0);
    this.model.dispose();
    for (const fn of fns) await fn();
  }
}

/** Every string of a message list but the roles (content, names, tool-call arguments …). */
function collectStrings(v: unknown, out: string[], key = ''): void {
  if (typeof v === 'string') {
    if (key !== 'role') out.push(v);
  } else if (Array.isArray(v)) for (const x of v) collectStrings(x, out);
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) collectStrings(x, out, k);
}

/** A copy of a message list with `f` applied to every string but the roles. */
function mapStrings(v: unknown, f: (s: string) => string, key = ''): unknown {
  if (typeof v === 'string') return key === 'role' ? v : f(v);
  if (Array.isArray(v)) return v.map((x) => mapStrings(x, f));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mapStrings(x, f, k)]));
  return v;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as any)[k] = v;
  return out;
}
