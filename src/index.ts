// sparrow's public entry: load a checkpoint into a LanguageModel and generate from it.

import { openCheckpoint, type Checkpoint, type CheckpointInput } from './formats/checkpoint';
import { BudgetError, ConfigError } from './formats/errors';
import { ArenaBudgetError, KernelError, threadsAvailable, type BuildChoice } from './kernels/runtime';
import { attachPool, createPool, type Pool } from './kernels/pool';
import { buildModel, familyFor, type ModelOptions } from './models/index';
import { LOAD_DTYPES, WeightStore, type LoadDType } from './runtime/weights';
import { KV_CACHE_TYPES, type KvCacheType } from './kernels/kvcache';
import { resolveAttention, type AttentionModeOptions } from './runtime/attention-mode';
import { ChatTemplate } from './generate/chat-template';
import { LanguageModel } from './generate/language-model';
import { Tokenizer } from './generate/tokenizer';
import type { Model } from './models/model';
import { acquireGpu, probeGpu, WebGpuUnavailableError } from './webgpu/device';
import { GpuModel } from './webgpu/model';
import type { HubOptions } from './formats/hub';

export type Backend = 'wasm' | 'webgpu' | 'auto';
export type CheckpointSource = CheckpointInput;

export interface LoadOptions {
  /**
   * Weight dtype in memory: 'auto' keeps the file's (f16/bf16/quantized, K-quants included) where the kernels take it;
   * 'q4_k_m', 'q5_k_m', 'q6_k', … quantize per tensor as llama.cpp's file types of those names (runtime/quantmix.ts).
   */
  dtype?: LoadDType;
  /**
   * Where generation runs. 'wasm' (default): the WASM kernels. 'webgpu': the WebGPU forward pass
   * (any adapter that passes the device check, software ones included); fails with
   * WebGpuUnavailableError when there is none and with a KernelError naming the layer when the
   * model has one without GPU kernels. 'auto': WebGPU when a hardware adapter exists and the model
   * has a GPU path, else WASM with a one-line notice (see onNotice).
   */
  backend?: Backend;
  /** Where 'auto' reports why it fell back to WASM. Default: console.warn. */
  onNotice?: (message: string) => void;
  /** Kernel build: 'auto' (relaxed SIMD when it validates and passes its probe), 'simd', 'relaxed', 'threads'. */
  build?: BuildChoice;
  /**
   * Threads for the matrix products (the calling thread counts): > 1 loads the 'threads' build and
   * starts a worker pool (Node, Bun, Deno; not Cloudflare Workers, which have no threads). Default 1.
   */
  threads?: number;
  /** Bytes the model may take (weights, scratch, session state); larger needs fail with BudgetError. */
  memoryBudget?: number;
  /** Positions a session holds. Default min(config max_position_embeddings, 4096). */
  maxContext?: number;
  /** Most sessions alive at once. */
  maxSessions?: number;
  /** Parity mode: quantized weights are dequantized inside the dot product. */
  exact?: boolean;
  /** A Jinja chat template replacing the checkpoint's own. */
  chatTemplate?: string;
  /**
   * Element type of the attention KV caches: 'f32' (default), 'q8_0' (0.27× the bytes) or 'q4_0'
   * (0.14×), per head in blocks of 32, read in place by attention. A model without attention caches
   * refuses a quantized type (ConfigError on options.kvCache); snapshots restore only into a model
   * loaded with the same type.
   */
  kvCache?: KvCacheType;
  /**
   * Attention at decode. `{ mode: 'dense' }` (default): every position. `{ mode: 'topk', pageSize,
   * pages, sinks, window }` (defaults 64, 16, 4, 256): training-free sparse attention for long
   * contexts — a decode step (a forward call of one token) of a full-attention layer reads the first
   * `sinks` positions, the last `window` and the `pages` KV pages of `pageSize` positions between
   * whose key bounds score highest for the query (Quest); prompts (forward calls of several tokens)
   * stay dense on every row, and a context of at most sinks + window + pages·pageSize positions is
   * attended densely (the same logits as 'dense'). Works with every
   * kvCache type and on both backends; sliding-window layers keep their window; a model without
   * full-attention layers (recurrent, MLA / DSA only) refuses 'topk'. The default page count is
   * lowered to what a short maxContext holds; `pages` given beyond it is refused. Bad settings are a
   * ConfigError naming the field (options.attention.pageSize, …).
   */
  attention?: AttentionModeOptions;
  /** Batched decoding of concurrent generations (LanguageModel.batching); default false. */
  batching?: boolean;
  onProgress?: (done: number, total: number, what: string) => void;
  /** A Hugging Face hub name as source (`org/name`, …): environment, download progress and retries (formats/hub.ts). */
  hub?: HubOptions;
}

const DTYPES: readonly LoadDType[] = LOAD_DTYPES;
const BACKENDS: Backend[] = ['wasm', 'webgpu', 'auto'];

function checkOptions(o: LoadOptions): void {
  if (o.dtype !== undefined && !DTYPES.includes(o.dtype)) throw new ConfigError('options.dtype', `must be one of ${DTYPES.join(', ')}, got ${JSON.stringify(o.dtype)}`);
  if (o.backend !== undefined && !BACKENDS.includes(o.backend)) throw new ConfigError('options.backend', `must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(o.backend)}`);
  if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 1)) throw new ConfigError('options.threads', `must be an integer ≥ 1, got ${JSON.stringify(o.threads)}`);
  if (o.memoryBudget !== undefined && !(o.memoryBudget > 0)) throw new ConfigError('options.memoryBudget', `must be a positive number of bytes, got ${JSON.stringify(o.memoryBudget)}`);
  if (o.maxContext !== undefined && (!Number.isInteger(o.maxContext) || o.maxContext < 1)) throw new ConfigError('options.maxContext', `must be an integer ≥ 1, got ${JSON.stringify(o.maxContext)}`);
  if (o.kvCache !== undefined && !KV_CACHE_TYPES.includes(o.kvCache)) throw new ConfigError('options.kvCache', `must be one of ${KV_CACHE_TYPES.join(', ')}, got ${JSON.stringify(o.kvCache)}`);
  resolveAttention(o.attention);
}

/**
 * A string source as openCheckpoint takes it: a URL or local path as it is, a Hugging Face hub name
 * (`org/name`, `org/name@rev`, `org/name/file.gguf`, `org/name:QUANT`) as the path of its download
 * in the hub cache. formats/hub.ts is imported here, on first use, and loads node: modules only on
 * runtimes with a file system; elsewhere a hub name is a HubError that says to pass a URL.
 */
async function resolveSource(source: CheckpointSource, hub?: HubOptions): Promise<CheckpointSource> {
  if (typeof source !== 'string') return source;
  const { resolveModelSource } = await import('./formats/hub');
  return (await resolveModelSource(source, hub)) ?? source;
}

/**
 * Loads a checkpoint (a GGUF or safetensors file path, an HF-style directory, a URL of either, a
 * Hugging Face hub name such as `org/name` on Node, Deno and Bun, the bytes of a file, or an
 * in-memory directory `{ files }`) and returns a LanguageModel. The weight bytes the load dtype implies are checked
 * against `memoryBudget` before anything is allocated.
 */
export async function loadModel(source: CheckpointSource, options: LoadOptions = {}): Promise<LanguageModel> {
  checkOptions(options);
  const dtype = options.dtype ?? 'auto';
  const threads = options.threads ?? 1;
  if (threads > 1) {
    if (options.build && options.build !== 'auto' && options.build !== 'threads') {
      throw new ConfigError('options.threads', `${threads} threads need the 'threads' build, but build is '${options.build}'`);
    }
    if (!threadsAvailable()) throw new ConfigError('options.threads', 'this runtime has no shared memory and workers; use threads: 1');
  }
  const ckpt: Checkpoint = await openCheckpoint(await resolveSource(source, options.hub));
  try {
    const family = familyFor(ckpt.config);
    if (options.memoryBudget !== undefined) {
      const need = WeightStore.plannedBytes(ckpt, dtype, (name) => family.keepF32?.(name, ckpt.config) ?? false, (name) => family.ignore?.(name, ckpt.config) ?? false);
      if (need > options.memoryBudget) throw new BudgetError(need, options.memoryBudget);
    }
    let model: Model;
    try {
      model = await buildModel(ckpt, {
        dtype,
        build: threads > 1 ? 'threads' : options.build,
        memoryBudget: options.memoryBudget,
        maxContext: options.maxContext,
        maxSessions: options.maxSessions,
        exact: options.exact,
        kvCache: options.kvCache,
        attention: options.attention,
        onProgress: options.onProgress,
      });
    } catch (e) {
      // The arena refuses growth past the budget (scratch, state slots).
      if (e instanceof ArenaBudgetError) throw new BudgetError(e.need, e.budget);
      throw e;
    }
    let pool: Pool | null = null;
    if (threads > 1) {
      pool = await createPool(model.k, threads);
      attachPool(model.k, pool);
    }
    const gpu = await gpuFor(model, options);
    const tokenizer = ckpt.tokenizerJson ? Tokenizer.fromJSON(ckpt.tokenizerJson, ckpt.tokenizerConfig ?? {}) : null;
    const template = ChatTemplate.fromConfig(ckpt.tokenizerConfig, options.chatTemplate ?? ckpt.chatTemplate);
    const lm = new LanguageModel(model, tokenizer, template, ckpt.generationConfig ?? {}, ckpt.tokenizerConfig ?? {}, gpu);
    if (options.batching) lm.batching = true;
    // Every weight is in the arena now: the file's bytes (or handle) are no longer needed.
    await ckpt.close();
    if (pool) lm.onDispose(() => pool.destroy());
    return lm;
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}

/** The GPU forward pass for backend 'webgpu' / 'auto', or null for WASM. */
async function gpuFor(model: Model, options: LoadOptions): Promise<GpuModel | null> {
  const backend = options.backend ?? 'wasm';
  if (backend === 'wasm') return null;
  const notice = options.onNotice ?? ((m: string) => console.warn(m));
  const fallback = (why: string) => {
    notice(`sparrow: running on WASM (WebGPU: ${why})`);
    return null;
  };
  const { gpu, reason } = await probeGpu();
  if (!gpu) {
    if (backend === 'webgpu') throw new WebGpuUnavailableError(reason!.replace(/^WebGPU is not available: /, ''));
    return fallback(reason!.replace(/^WebGPU is not available: /, ''));
  }
  if (backend === 'auto' && gpu.software) return fallback(`adapter "${gpu.adapterName}" is a CPU implementation`);
  try {
    return new GpuModel(model, gpu);
  } catch (e) {
    if (backend === 'webgpu' || !(e instanceof KernelError)) throw e;
    return fallback(e.message);
  }
}

export { LanguageModel, ModelSession, Generation, yieldToHost } from './generate/language-model';
export type { GenerateParams, ChatParams, GeneratedToken, FinishReason, GenerationStats, GenerationResult, LanguageModelInfo, LanguageModelStatus } from './generate/language-model';
export { Tokenizer } from './generate/tokenizer';
export { ChatTemplate, type ChatMessage, type RenderOptions } from './generate/chat-template';
export { Sampler, resolveSampling, type SamplingParams } from './generate/sampler';
export { StepBatcher, batcherOf, type BatcherStats, type RunOptions } from './generate/batcher';
export { TextStream, StopStrings } from './generate/stream';
export { RequestError, ContextLengthError } from './generate/errors';
export { Grammar, GrammarConstraint, GrammarError, GrammarMatcher, TokenVocabulary, jsonSchemaToGbnf, regexToGbnf } from './generate/grammar/index';
export {
  ToolCallParser, ToolError, detectToolFormat, templateMessages, templateTools, toolCallGbnf, toolFunctions,
  type ToolCall, type ToolFormat, type ToolFunction,
} from './generate/tool-calls';
export { embed, embeddingDimensions, embeddingSupport, embeddingTokens, MAX_EMBEDDING_INPUTS, type EmbedOptions, type EmbedResult } from './generate/embeddings';
export { convertToGGUF, ggufFor, type ConvertDType, type ConvertOptions, type ConvertResult } from './convert';
export { FormatError, ConfigError, BudgetError } from './formats/errors';
export { SnapshotError, SlotsBusyError } from './runtime/state';
export { ArenaBudgetError } from './kernels/runtime';
export { supportedModelTypes } from './models/index';
export { acquireGpu, probeGpu, WebGpuUnavailableError, type GpuDevice } from './webgpu/device';
export { GpuModel, GpuSession, gpuModel, forwardBatch } from './webgpu/model';

/**
 * Loads a checkpoint and uploads it to the WebGPU device (a GpuModel: sessions with async forward
 * and greedy batches). Rejects with WebGpuUnavailableError when there is no usable adapter, and with
 * a KernelError naming the part of the model that has no GPU kernels yet.
 */
export async function loadGpuModel(source: CheckpointInput, options: Omit<ModelOptions, 'build'> = {}): Promise<GpuModel> {
  const gpu = await acquireGpu();
  const ckpt = await openCheckpoint(await resolveSource(source));
  try {
    const model = await buildModel(ckpt, { exact: true, ...options, maxSessions: options.maxSessions ?? 1 });
    return new GpuModel(model, gpu);
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}
export type { ModelInfo } from './models/index';
export type { LoadDType } from './runtime/weights';
export { KV_CACHE_TYPES, type KvCacheType } from './kernels/kvcache';
export { ATTENTION_MODES, TOPK_DEFAULTS, formatAttention, parseAttentionFlag, resolveAttention, type AttentionModeName, type AttentionModeOptions, type ResolvedAttention } from './runtime/attention-mode';
