// llama.cpp as a reference runtime, through node-llama-cpp (its prebuilt CPU binary from
// @node-llama-cpp/linux-x64; never built or downloaded at run time): load a GGUF file, run greedy
// continuations and teacher-forced passes on token ids. Also a tiny random Llama checkpoint written
// in llama.cpp's own GGUF layout (token_embd / blk.N.* / output*, llama.* hyperparameters and an
// SPM vocabulary) for tests that need a file both runtimes read.
//
// What node-llama-cpp exposes per position: LlamaContextSequence.controlledEvaluate() takes the
// input tokens, each optionally with `generateNext: { token, probabilities }`; a token marked so
// gets its logits computed in the same batch, sampled by the sampler chain (temperature 0: the
// greedy sampler alone, which leaves the logits as they are) and returned as
// `next.probabilities`, a softmax over the whole vocabulary in float32, sorted by probability.
// The raw logits are not returned: log(probability) is the log-softmax, i.e. the logits less their
// log-sum-exp, which is what comparisons against other runtimes should use (probabilities that
// underflow to 0 come back as -Infinity). Token bias (`tokenBias`) and getNextTokenProbabilities-
// style calls add nothing beyond that: the bias is applied before the softmax, and there is no
// logits getter on LlamaContext or LlamaContextSequence.

import type { ControlledEvaluateInputItem, Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { GGUFWriter } from '../src/formats/gguf';
import { randn, rng } from './helpers';

export interface PeerOptions {
  /** Threads llama.cpp uses for evaluation (default 1). */
  threads?: number;
  /** Positions the context holds (default 256). */
  contextSize?: number;
  /** Element type of the KV cache (default F32; llama.cpp's own default is F16, which rounds K and V). */
  kvCacheType?: 'F32' | 'F16';
}

export interface Peer {
  llama: Llama;
  model: LlamaModel;
  context: LlamaContext;
  sequence: LlamaContextSequence;
  /** Vocabulary size of the loaded model. */
  vocabSize: number;
  close(): Promise<void>;
}

let llamaPromise: Promise<Llama> | undefined;

/**
 * The shared Llama instance: CPU only (no GPU probing), the prebuilt binary only (`build: 'never'`
 * fails instead of downloading and compiling llama.cpp), warnings and errors only.
 */
export function peerLlama(threads = 1): Promise<Llama> {
  llamaPromise ??= (async () => {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    return getLlama({
      gpu: false,
      build: 'never',
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      maxThreads: threads,
      logLevel: LlamaLogLevel.error,
    });
  })();
  return llamaPromise;
}

/** Loads a GGUF file into llama.cpp on the CPU with one sequence of `contextSize` positions. */
export async function loadPeer(modelPath: string, o: PeerOptions = {}): Promise<Peer> {
  const threads = o.threads ?? 1;
  const contextSize = o.contextSize ?? 256;
  const llama = await peerLlama(threads);
  const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: false });
  const kv = o.kvCacheType ?? 'F32';
  const context = await model.createContext({
    contextSize, batchSize: contextSize, threads, sequences: 1, flashAttention: false,
    experimentalKvCacheKeyType: kv, experimentalKvCacheValueType: kv,
  });
  const sequence = context.getSequence();
  return {
    llama,
    model,
    context,
    sequence,
    vocabSize: vocabOf(model),
    async close() {
      await context.dispose();
      await model.dispose();
    },
  };
}

/**
 * Vocabulary size: the length of `tokenizer.ggml.tokens` in the file's metadata, or for a file with
 * no vocabulary (`tokenizer.ggml.model = none`, where llama.cpp makes placeholder tokens)
 * `<arch>.vocab_size`.
 */
function vocabOf(model: LlamaModel): number {
  const meta = model.fileInfo.metadata as any;
  const toks = meta?.tokenizer?.ggml?.tokens;
  if (Array.isArray(toks)) return toks.length;
  const arch = meta?.general?.architecture;
  const n = typeof arch === 'string' ? meta?.[arch]?.vocab_size : undefined;
  if (typeof n === 'number' && n > 0) return n;
  throw new Error(`${model.filename}: neither tokenizer.ggml.tokens nor ${arch}.vocab_size in its metadata`);
}

const GREEDY = { temperature: 0 } as const;

/**
 * The greedy continuation of `prompt` (token ids): `n` new token ids, end-of-generation tokens
 * included. The sequence starts empty, so calls do not depend on each other.
 */
export async function peerGreedy(peer: Peer, prompt: readonly number[], n: number): Promise<number[]> {
  if (prompt.length === 0) throw new Error('peerGreedy: empty prompt');
  const seq = peer.sequence;
  await seq.clearHistory();
  const out: number[] = [];
  const ask = (t: number): ControlledEvaluateInputItem => [t as Token, { generateNext: { token: true, options: GREEDY } }];
  let input: ControlledEvaluateInputItem[] = prompt.map((t, i) => (i === prompt.length - 1 ? ask(t) : (t as Token)));
  while (out.length < n) {
    const res = await seq.controlledEvaluate(input);
    const tok = res[input.length - 1]?.next.token;
    if (tok === undefined || tok === null) throw new Error(`peerGreedy: no token after ${prompt.length + out.length} positions`);
    out.push(tok);
    input = [ask(tok)];
  }
  await seq.clearHistory();
  return out;
}

export interface PeerPosition {
  /** The greedy (top-1) next token after this position. */
  top1: number;
  /** log-softmax of the logits over the whole vocabulary (length vocabSize). */
  logProbs: Float32Array;
}

/**
 * Teacher forcing: `tokens` evaluated in one pass, and at each position the next-token
 * distribution as log-probabilities plus its argmax.
 */
export async function peerTeacherForced(peer: Peer, tokens: readonly number[]): Promise<PeerPosition[]> {
  const seq = peer.sequence;
  await seq.clearHistory();
  // One token per evaluation: on CPUs with AMX (Intel Sapphire Rapids and later) llama.cpp runs
  // batched Q8_0 products on its AMX kernels, which gave NaN or unrelated logits on these small
  // files (deepseekv3-mla, falconmamba) while its one-token path agreed with sparrow.
  const res: Awaited<ReturnType<typeof seq.controlledEvaluate>> = [];
  for (const t of tokens) {
    res.push(...(await seq.controlledEvaluate([[t as Token, { generateNext: { token: true, probabilities: true, options: GREEDY } }] as ControlledEvaluateInputItem])));
  }
  await seq.clearHistory();
  const n = peer.vocabSize;
  return tokens.map((_, i) => {
    const next = res[i]?.next;
    if (!next || next.token === undefined || next.token === null || !next.probabilities) throw new Error(`peerTeacherForced: no output at position ${i}`);
    const logProbs = new Float32Array(n).fill(-Infinity);
    for (const [tok, p] of next.probabilities) if (tok < n) logProbs[tok] = Math.log(p);
    return { top1: next.token, logProbs };
  });
}

// ---- a tiny Llama in llama.cpp's GGUF layout ------------------------------------------------------

export interface TinyLlamaCppOptions {
  seed?: number;
  hidden?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  ffn?: number;
  /** Ordinary tokens after <unk>, <s>, </s> and the 256 byte tokens. */
  words?: number;
  contextLength?: number;
  ropeTheta?: number;
  rmsEps?: number;
  /** Standard deviations of the random weights (defaults: embeddings 1, q/k/v 0.3, attn_output, ffn 0.2, output 0.6). */
  scales?: { embd?: number; qkv?: number; attnOut?: number; ffn?: number; output?: number };
  /**
   * Adds `peak` × the embedding of token t to the output row of token t + 1 (mod vocab): after token
   * t the logit of t + 1 stands out by about peak · |embedding|², so top-1 has a wide margin.
   */
  peak?: number;
}

export interface TinyLlamaCpp {
  writer: GGUFWriter;
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  /** Every tensor by its GGUF name, row-major in HF order ([out, in] for projections). */
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

/** llama.cpp token types (gguf-py TokenType). */
const TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_BYTE = 6;

/**
 * A random f32 Llama in llama.cpp's layout: `token_embd.weight`, `blk.N.{attn_norm, attn_q, attn_k,
 * attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight`, `output_norm.weight`,
 * `output.weight`; `llama.*` hyperparameters; a `tokenizer.ggml.model = llama` (SPM) vocabulary of
 * <unk>, <s>, </s>, <0x00>…<0xFF> and `words` made-up pieces. The q/k rows are taken as already in
 * llama.cpp's rotary order (adjacent pairs rotate together), as its HF converter leaves them.
 */
export function tinyLlamaCppGGUF(o: TinyLlamaCppOptions = {}): TinyLlamaCpp {
  const hidden = o.hidden ?? 64, layers = o.layers ?? 2, heads = o.heads ?? 4, kvHeads = o.kvHeads ?? 2, ffn = o.ffn ?? 128;
  const headDim = hidden / heads;
  const words = o.words ?? 61;
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
  }
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  for (let i = 0; i < words; i++) {
    tokens.push('\u2581' + letters[i % 26] + letters[Math.floor(i / 26) % 26] + (i >= 676 ? String(i) : ''));
    types.push(TOKEN_NORMAL);
  }
  const vocab = tokens.length;
  const scores = tokens.map((_, i) => (types[i] === TOKEN_NORMAL ? -i : 0));

  const w = new GGUFWriter();
  w.set('general.architecture', 'llama');
  w.set('general.name', 'sparrow-peer-tiny');
  w.set('general.file_type', 0, 'u32');
  w.set('llama.vocab_size', vocab, 'u32');
  w.set('llama.context_length', o.contextLength ?? 512, 'u32');
  w.set('llama.embedding_length', hidden, 'u32');
  w.set('llama.block_count', layers, 'u32');
  w.set('llama.feed_forward_length', ffn, 'u32');
  w.set('llama.attention.head_count', heads, 'u32');
  w.set('llama.attention.head_count_kv', kvHeads, 'u32');
  w.set('llama.attention.layer_norm_rms_epsilon', o.rmsEps ?? 1e-5, 'f32');
  w.set('llama.rope.dimension_count', headDim, 'u32');
  w.set('llama.rope.freq_base', o.ropeTheta ?? 10000, 'f32');
  w.set('tokenizer.ggml.model', 'llama');
  w.set('tokenizer.ggml.pre', 'default');
  w.set('tokenizer.ggml.tokens', tokens, 'array<string>');
  w.set('tokenizer.ggml.scores', scores, 'array<f32>');
  w.set('tokenizer.ggml.token_type', types, 'array<i32>');
  w.set('tokenizer.ggml.unknown_token_id', 0, 'u32');
  w.set('tokenizer.ggml.bos_token_id', 1, 'u32');
  w.set('tokenizer.ggml.eos_token_id', 2, 'u32');
  w.set('tokenizer.ggml.add_bos_token', true, 'bool');
  w.set('tokenizer.ggml.add_eos_token', false, 'bool');

  const r = rng(o.seed ?? 11);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const a = randn(shape.reduce((x, y) => x * y, 1), r, scale);
    if (offset) for (let i = 0; i < a.length; i++) a[i] += offset;
    tensors.set(name, { shape, data: a });
    w.addTensor(name, 'f32', shape, new Uint8Array(a.buffer));
  };
  const sc = { embd: 1, qkv: 0.3, attnOut: 0.2, ffn: 0.2, output: 0.6, ...o.scales };
  add('token_embd.weight', [vocab, hidden], sc.embd);
  for (let i = 0; i < layers; i++) {
    const p = `blk.${i}`;
    add(`${p}.attn_norm.weight`, [hidden], 0.1, 1);
    add(`${p}.attn_q.weight`, [heads * headDim, hidden], sc.qkv);
    add(`${p}.attn_k.weight`, [kvHeads * headDim, hidden], sc.qkv);
    add(`${p}.attn_v.weight`, [kvHeads * headDim, hidden], sc.qkv);
    add(`${p}.attn_output.weight`, [hidden, heads * headDim], sc.attnOut);
    add(`${p}.ffn_norm.weight`, [hidden], 0.1, 1);
    add(`${p}.ffn_gate.weight`, [ffn, hidden], sc.ffn);
    add(`${p}.ffn_up.weight`, [ffn, hidden], sc.ffn);
    add(`${p}.ffn_down.weight`, [hidden, ffn], sc.ffn);
  }
  add('output_norm.weight', [hidden], 0.1, 1);
  const out = randn(vocab * hidden, r, sc.output);
  if (o.peak) {
    const e = tensors.get('token_embd.weight')!.data;
    for (let t = 0; t < vocab; t++) {
      const row = ((t + 1) % vocab) * hidden;
      for (let c = 0; c < hidden; c++) out[row + c] += o.peak * e[t * hidden + c];
    }
  }
  tensors.set('output.weight', { shape: [vocab, hidden], data: out });
  w.addTensor('output.weight', 'f32', [vocab, hidden], new Uint8Array(out.buffer));
  return { writer: w, vocab, hidden, layers, heads, kvHeads, headDim, ffn, tensors };
}
