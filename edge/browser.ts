// The chat page's in-browser mode: the library bundled as one ES module (build/browser/sparrow.js,
// made by tools/browser-build.mjs) that loads the model from the page's own server and generates in
// the page, with no /v1 request.
//
// Kernels: the page has no file system, so the WASM builds are fetched, compiled here and handed to
// the runtime with provideModule. The relaxed-SIMD build is offered only when the engine validates
// it; loadModel's 'auto' choice then still probes its int8 dot product and falls back to simd.
//
// WebGPU: the model is loaded with backend 'auto', so generation runs on the page's GPU when it has
// a hardware adapter and the model has a GPU path, and on WASM otherwise (the label says why).

import { loadModel, type ChatMessage, type LanguageModel, type ModelSession } from '../src/index';
import { provideModule, type BuildName } from '../src/kernels/runtime';
import { chatStopIds } from './chat-stops';

export { loadModel, provideModule };

export interface LoadInBrowserOptions {
  /** Absolute URL of a GGUF that holds its tokenizer and chat template in its metadata. */
  modelUrl: string;
  /** Absolute URL of a kernel build (`simd`, `relaxed`). */
  wasmUrl: (build: BuildName) => string;
  /** Reports loading: a short message and, where known, the fraction done. */
  onProgress?: (what: string, fraction: number | null) => void;
}

export interface BrowserBackend {
  /** Where tokens are computed. */
  compute: 'wasm' | 'webgpu';
  /** The kernel build in use. */
  build: string;
  /** The WebGPU adapter generation runs on, or null on WASM. */
  gpuAdapter: string | null;
  /** One line for the page. */
  label: string;
}

export interface TurnParams {
  maxTokens?: number;
  temperature?: number;
  seed?: number;
  signal?: AbortSignal;
}

export interface TurnStats {
  promptTokens: number;
  cachedTokens: number;
  generatedTokens: number;
  ttftMs: number;
  decodeMs: number;
  finishReason: string | null;
}

async function compileBuild(build: BuildName, url: string, need: boolean): Promise<boolean> {
  let bytes: ArrayBuffer;
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: status ${res.status}`);
    bytes = await res.arrayBuffer();
  } catch (e) {
    if (need) throw e;
    return false;
  }
  if (!WebAssembly.validate(bytes)) {
    if (need) throw new Error(`this browser cannot run the ${build} kernels (WebAssembly SIMD is required)`);
    return false;
  }
  provideModule(build, await WebAssembly.compile(bytes));
  return true;
}

/** One conversation run in the page: the model, a session that carries the state across turns. */
export class InBrowserChat {
  private session: ModelSession;
  private readonly stopIds: number[];
  private busy = false;
  private resetPending = false;
  lastStats: TurnStats | null = null;

  private constructor(readonly lm: LanguageModel, readonly backend: BrowserBackend) {
    this.session = lm.session();
    this.stopIds = chatStopIds(lm);
  }

  static async load(opts: LoadInBrowserOptions): Promise<InBrowserChat> {
    const progress = opts.onProgress ?? (() => {});
    progress('fetching kernels', null);
    const [relaxed] = await Promise.all([
      compileBuild('relaxed', opts.wasmUrl('relaxed'), false),
      compileBuild('simd', opts.wasmUrl('simd'), true),
    ]);
    progress('loading model', 0);
    let why = '';
    const lm = await loadModel(opts.modelUrl, {
      build: relaxed ? 'auto' : 'simd',
      backend: 'auto',
      onNotice: (m) => (why = m.replace(/^sparrow: running on WASM \(WebGPU: (.*)\)$/, '$1')),
      onProgress: (done, total) => progress(`loading weights ${done}/${total}`, total > 0 ? done / total : null),
    });
    if (!lm.chatTemplate) throw new Error('the model has no chat template');
    const info = lm.info();
    const build = info.build;
    if (lm.backend === 'webgpu') {
      return new InBrowserChat(lm, { compute: 'webgpu', build, gpuAdapter: info.adapter ?? null, label: `WebGPU (${info.adapter})` });
    }
    const label = `WASM (${build} build) · WebGPU not used: ${why || 'no adapter'}`;
    return new InBrowserChat(lm, { compute: 'wasm', build, gpuAdapter: null, label });
  }

  /** The assistant's reply to `messages`, piece by piece; stats in lastStats when it ends. */
  async *reply(messages: ChatMessage[], p: TurnParams = {}): AsyncGenerator<string> {
    if (this.busy) throw new Error('a reply is already being generated');
    this.busy = true;
    this.lastStats = null;
    try {
      const gen = this.lm.chat(messages, {
        session: this.session, stopTokenIds: this.stopIds, signal: p.signal,
        maxTokens: p.maxTokens, temperature: p.temperature, seed: p.seed,
      });
      for await (const t of gen) if (t.text) yield t.text;
      // The last token was sampled but not fed; an end-of-turn token begins the next prompt, so
      // feeding it lets the next turn resume from here. EOS never is part of a prompt.
      const last = gen.tokens[gen.tokens.length - 1];
      if (gen.finishReason !== 'abort' && last !== undefined && !this.lm.eosTokenIds.has(last) && this.session.pos < this.lm.maxContext) {
        await this.session.feed([last]);
      }
      this.lastStats = { ...gen.stats, finishReason: gen.finishReason };
    } finally {
      this.busy = false;
      if (this.resetPending) this.reset();
    }
  }

  /** Forgets the conversation (once the reply being generated, if any, has ended). */
  reset(): void {
    if (this.busy) {
      this.resetPending = true;
      return;
    }
    this.resetPending = false;
    this.session.dispose();
    this.session = this.lm.session();
  }
}
