// llama.cpp's own GGUF layout, both ways: a GGUF written by llama.cpp's convert_hf_to_gguf.py opens as
// the HF checkpoint it came from (config.json fields the family reads, tensors under their HF names
// and shapes, the tokenizer rebuilt from `tokenizer.ggml.*`), and a checkpoint can be written in that
// layout (`convert --format llama.cpp`).
//
// Architectures (general.architecture → HF model_type), read and written:
//   llama          llama; mistral (when `llama.attention.sliding_window` is set); mixtral (expert_count > 0)
//   qwen2          qwen2
//   qwen3          qwen3
//   gemma2         gemma2
//   gemma3         gemma3_text
//   qwen2moe       qwen2_moe
//   qwen3moe       qwen3_moe
//   olmoe          olmoe
//   mamba          mamba; falcon_mamba (when `mamba.ssm.dt_b_c_rms` is true)
//   mamba2         mamba2
//   jamba          jamba
//   granitehybrid  granitemoehybrid
//   lfm2           lfm2
//   deepseek2      deepseek_v3 (sigmoid gating, expert_gating_func 2)
//   gpt-oss        gpt_oss
//   qwen3next      qwen3_next
// Not covered: rwkv (llama.cpp has RWKV-6/7, sparrow RWKV-4), bamba, granitemoe,
// recurrent_gemma, minimax (no llama.cpp architecture), deepseek_v32.
//
// What the reader undoes (llamacpp-tensors.ts): the Q/K row permutation of llama and granitehybrid
// attention, `+1` on Gemma / Qwen3-Next norm weights, A = -exp(A_log) of the SSMs, squeezed conv
// kernels and reshaped Mamba-2 vectors, stacked experts (zero-copy per-expert views), split fused
// tensors (Granite [gate; up], gpt-oss interleaved gate/up, DeepSeek attn_k_b / attn_v_b).
// Hyperparameters llama.cpp does not store are written under extra `<arch>.*` keys so that a file
// written here reads back to the same model (llama.cpp ignores them): `attention.sliding_window_pattern`
// (per-layer bools), `attention.scale` for Gemma's query_pre_attn_scalar, `rope.scaling.yarn_truncate`,
// `rope.scaling.llama3.*` (Llama 3 RoPE; llama.cpp reads it from `rope_freqs.weight`, which is
// written too, and read back by fitting when the keys are absent), `swiglu_clamp_exp` (gpt-oss
// swiglu_limit), `ssm.dt_b_c_rms_epsilon` (FalconMamba mixer_rms_eps). Where a key is absent the
// reader takes llama.cpp's own default for the architecture.

import { ropeTables } from '../kernels/rope';
import { ConfigError, FormatError } from './errors';
import type { DType, KQuantDType, QuantMix } from './dtype';
import { blockSize, encodeF32, isQuantized, isQuantMix, numElements, storedDType, tensorByteSize, toF32 } from './dtype';
import type { GGUFFile } from './gguf';
import { GGUFWriter, ggmlType, ggufFileType } from './gguf';
import { ARCHS, KV, type ArchSpec, type Cfg, type GGView } from './llamacpp-archs';
import { elementwise, fill, match, permuteRows, transposeEach, unpermuteRows, type Template } from './llamacpp-tensors';
import { PLACEHOLDER_KEY, placeholderVocabGGUF, tokenizerFromGGUF, tokenizerToGGUF } from './gguf-tokenizer';
import { isKQuant } from './kquants';
import { mixModel, mixStoredDType, type MixModel } from '../runtime/quantmix';
import { concatBytes, type ByteSource } from './source';
import type { Checkpoint, TensorInfo } from './checkpoint';

export { ARCHS as LLAMACPP_ARCH_SPECS } from './llamacpp-archs';

/** llama.cpp architecture names this module reads and writes. */
export const LLAMACPP_ARCHS: readonly string[] = ARCHS.map((a) => a.arch);

/** HF model_types that can be written in llama.cpp's layout. */
export const LLAMACPP_MODEL_TYPES: readonly string[] = ARCHS.flatMap((a) => a.hfTypes);

/** GGUF tensors of llama.cpp files that have no HF counterpart (derived tables). */
const DERIVED = new Set(['rope_freqs.weight', 'rope_factors_long.weight', 'rope_factors_short.weight']);

/** Whether a parsed GGUF is in llama.cpp's layout (rather than sparrow's HF-named convention). */
export function isLlamaCppLayout(g: GGUFFile): boolean {
  if (g.metadata['sparrow.hf_config'] !== undefined) return false;
  return g.tensors.some((t) => t.name === 'token_embd.weight' || t.name.startsWith('blk.'));
}

function specFor(arch: string): ArchSpec {
  const s = ARCHS.find((a) => a.arch === arch);
  if (!s) throw new ConfigError('gguf.metadata["general.architecture"]', `llama.cpp architecture ${JSON.stringify(arch)} is not supported (supported: ${LLAMACPP_ARCHS.join(', ')})`);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface LlamaCppParts {
  config: Cfg;
  tensors: TensorInfo[];
  tokenizerJson?: string;
  tokenizerConfig?: Record<string, unknown>;
  chatTemplate?: string;
  generationConfig?: Record<string, unknown>;
  /** GGUF tensors with no HF counterpart that were left out. */
  unmapped: string[];
}

/** A tensor computed on read from GGUF tensors. */
function computedSource(name: string, byteLength: number, make: () => Promise<Uint8Array>): ByteSource {
  return {
    size: byteLength,
    name,
    async read(offset, length) {
      const all = await make();
      return all.subarray(offset, offset + length);
    },
  };
}

async function readF32(t: TensorInfo): Promise<Float32Array> {
  const bytes = await t.source.read(t.byteOffset, t.byteLength);
  return toF32(t.dtype, bytes, numElements(t.shape));
}

function f32Bytes(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

function rowBytesOf(t: TensorInfo): number {
  const cols = t.shape.length > 1 ? t.shape[t.shape.length - 1] : 1;
  return t.shape.length > 1 ? tensorByteSize(t.dtype, [1, cols]) : tensorByteSize(t.dtype, [1]);
}

/**
 * The HF view of a llama.cpp GGUF: config (or `configOverride`, e.g. a config.json beside the file),
 * tensors under HF names, tokenizer. A missing hyperparameter is a ConfigError naming its key; an
 * unknown architecture lists the supported ones.
 */
export function fromLlamaCpp(g: GGUFFile, configOverride?: Cfg): LlamaCppParts {
  const arch = g.metadata['general.architecture'];
  if (typeof arch !== 'string' || !arch) throw new ConfigError('gguf.metadata["general.architecture"]', `is missing: cannot tell which llama.cpp architecture this is (supported: ${LLAMACPP_ARCHS.join(', ')})`);
  const spec = specFor(arch);
  const byName = new Map(g.tensors.map((t) => [t.name, t]));
  const view: GGView = {
    has: (n) => byName.has(n),
    shape: (n) => byName.get(n)?.shape,
    layersWith(suffix) {
      const out: number[] = [];
      for (const t of g.tensors) {
        const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
        if (m && m[2] === suffix) out.push(Number(m[1]));
      }
      return out.sort((a, b) => a - b);
    },
  };
  const kv = new KV(arch, g.metadata);
  const config = configOverride ?? spec.readConfig(kv, view);
  if (!configOverride) inferLlama3Rope(config, byName, kv);
  const templates = spec.templates(config);
  const out: TensorInfo[] = [];
  const done = new Set<string>();
  const unmapped: string[] = [];
  const file = g.source.name;
  for (const t of g.tensors) {
    if (done.has(t.name)) continue;
    let hit: { tpl: Template; j: number; vars: Record<string, number> } | null = null;
    for (const tpl of templates) {
      for (let j = 0; j < tpl.gg.length && !hit; j++) {
        const vars = match(tpl.gg[j], t.name);
        if (vars) hit = { tpl, j, vars };
      }
      if (hit) break;
    }
    if (!hit) {
      if (!DERIVED.has(t.name)) unmapped.push(t.name);
      continue;
    }
    const { tpl, vars } = hit;
    const srcs = tpl.gg.map((n) => {
      const name = fill(n, vars);
      const s = byName.get(name);
      if (!s) throw new FormatError(`gguf.tensors[${JSON.stringify(name)}]`, `missing: ${JSON.stringify(t.name)} needs it to rebuild ${JSON.stringify(fill(tpl.hf, { ...vars, e: 0 }))}`, file);
      return s;
    });
    for (const s of srcs) done.add(s.name);
    for (const info of rebuild(tpl, vars, srcs, file)) out.push(info);
  }
  const tok = tokenizerFromGGUF(g.metadata);
  const gen: Record<string, unknown> = {};
  for (const [k, hk] of [['tokenizer.ggml.bos_token_id', 'bos_token_id'], ['tokenizer.ggml.eos_token_id', 'eos_token_id'], ['tokenizer.ggml.padding_token_id', 'pad_token_id']] as const) {
    // A placeholder vocabulary's ids are not the model's.
    const v = g.metadata[PLACEHOLDER_KEY] === true ? undefined : g.metadata[k];
    if (typeof v === 'number') {
      gen[hk] = v;
      if (!configOverride && config[hk] === undefined) config[hk] = v;
    }
  }
  return {
    config,
    tensors: out,
    tokenizerJson: tok?.tokenizerJson,
    tokenizerConfig: tok?.tokenizerConfig,
    chatTemplate: typeof g.metadata['tokenizer.chat_template'] === 'string' ? g.metadata['tokenizer.chat_template'] as string : undefined,
    generationConfig: Object.keys(gen).length ? gen : undefined,
    unmapped,
  };
}

/** HF tensors rebuilt from the GGUF tensors of one template. */
function rebuild(tpl: Template, vars: Record<string, number>, srcs: TensorInfo[], file: string): TensorInfo[] {
  const xf = tpl.xf;
  const s0 = srcs[0];
  const hfName = (e = 0) => fill(tpl.hf, { ...vars, e });
  const viewOf = (name: string, shape: number[], off = 0, len = s0.byteLength): TensorInfo => ({ name, dtype: s0.dtype, shape, byteOffset: s0.byteOffset + off, byteLength: len, source: s0.source });
  const computed = (name: string, shape: number[], fn: (xs: Float32Array[]) => Float32Array): TensorInfo => {
    const n = numElements(shape);
    return {
      name, dtype: 'f32', shape, byteOffset: 0, byteLength: n * 4,
      source: computedSource(`${file}#${name}`, n * 4, async () => f32Bytes(fn(await Promise.all(srcs.map(readF32))))),
    };
  };
  /** Rows gathered from the sources: `picks` are [source index, row] pairs, in output order. */
  const rows = (name: string, shape: number[], picks: [number, number][]): TensorInfo => {
    const rb = srcs.map(rowBytesOf);
    for (const s of srcs) {
      if (s.dtype !== s0.dtype) throw new FormatError(`gguf.tensors[${JSON.stringify(s.name)}].type`, `is ${s.dtype}, ${s0.name} is ${s0.dtype}`, file);
      if (s.shape.length < 2 && !elementwise(s.dtype)) throw new FormatError(`gguf.tensors[${JSON.stringify(s.name)}].type`, `${s.dtype} vector cannot be reordered`, file);
    }
    const len = picks.reduce((a, [si]) => a + rb[si], 0);
    return {
      name, dtype: s0.dtype, shape, byteOffset: 0, byteLength: len,
      source: computedSource(`${file}#${name}`, len, async () => {
        const data = await Promise.all(srcs.map((s) => s.source.read(s.byteOffset, s.byteLength)));
        const out = new Uint8Array(len);
        let o = 0;
        for (const [si, r] of picks) {
          out.set(data[si].subarray(r * rb[si], (r + 1) * rb[si]), o);
          o += rb[si];
        }
        return out;
      }),
    };
  };
  const sh = s0.shape;
  switch (xf.k) {
    case 'rename':
      return [viewOf(hfName(), xf.toHF ? xf.toHF(sh) : sh)];
    case 'permute': {
      const inv = unpermuteRows(sh[0], xf.heads);
      return [rows(hfName(), sh, Array.from(inv, (r) => [0, r] as [number, number]))];
    }
    case 'plus1':
      return [computed(hfName(), sh, ([x]) => x.map((v) => v - 1))];
    case 'negexp':
      return [computed(hfName(), xf.toHF ? xf.toHF(sh) : sh, ([x]) => x.map((v) => Math.log(-v)))];
    case 'experts': {
      const E = sh[0];
      const per = s0.byteLength / E;
      if (!Number.isInteger(per)) throw new FormatError(`gguf.tensors[${JSON.stringify(s0.name)}]`, `${E} experts do not split its ${s0.byteLength} bytes evenly`, file);
      return Array.from({ length: E }, (_, e) => viewOf(hfName(e), sh.slice(1), e * per, per));
    }
    case 'splitRows': {
      // gate [E?, I, D] + up [E?, I, D] → [E?, 2I, D]: per expert, the gate rows then the up rows.
      const E = sh.length === 3 ? sh[0] : 1;
      const I = sh[sh.length - 2];
      const picks: [number, number][] = [];
      for (let e = 0; e < E; e++) for (const si of [0, 1]) for (let r = 0; r < I; r++) picks.push([si, e * I + r]);
      return [rows(hfName(), sh.length === 3 ? [E, 2 * I, sh[2]] : [2 * I, sh[1]], picks)];
    }
    case 'ossGateUp': {
      const [E, I, D] = sh;
      return [computed(hfName(), [E, D, 2 * I], ([g, u]) => {
        const out = new Float32Array(E * D * 2 * I);
        for (let e = 0; e < E; e++) for (let j = 0; j < I; j++) for (let d = 0; d < D; d++) {
          const src = (e * I + j) * D + d;
          out[(e * D + d) * 2 * I + 2 * j] = g[src];
          out[(e * D + d) * 2 * I + 2 * j + 1] = u[src];
        }
        return out;
      })];
    }
    case 'ossBias': {
      const [E, I] = sh;
      return [computed(hfName(), [E, 2 * I], ([g, u]) => {
        const out = new Float32Array(E * 2 * I);
        for (let e = 0; e < E; e++) for (let j = 0; j < I; j++) {
          out[e * 2 * I + 2 * j] = g[e * I + j];
          out[e * 2 * I + 2 * j + 1] = u[e * I + j];
        }
        return out;
      })];
    }
    case 'ossDown': {
      const [E, D, I] = sh;
      return [computed(hfName(), [E, I, D], ([x]) => transposeEach(x, E, D, I))];
    }
    case 'kvb': {
      // attn_k_b [H, R, nope] (each head transposed) + attn_v_b [H, v, R] → kv_b_proj [H·(nope + v), R].
      const [H, R, nope] = sh;
      const v = srcs[1].shape[1];
      return [computed(hfName(), [H * (nope + v), R], ([k, vb]) => {
        const out = new Float32Array(H * (nope + v) * R);
        for (let h = 0; h < H; h++) {
          const base = h * (nope + v) * R;
          for (let j = 0; j < nope; j++) for (let r = 0; r < R; r++) out[base + j * R + r] = k[(h * R + r) * nope + j];
          out.set(vb.subarray(h * v * R, (h + 1) * v * R), base + nope * R);
        }
        return out;
      })];
    }
  }
}

/** Llama 3 RoPE parameters from `rope_freqs.weight` when the file has no scaling keys (llama.cpp's own files). */
function inferLlama3Rope(config: Cfg, byName: Map<string, TensorInfo>, kv: KV): void {
  const rf = byName.get('rope_freqs.weight');
  if (!rf || kv.has('rope.scaling.type') || kv.has('rope.scaling.llama3.factor') || !config.rope_parameters) return;
  config.rope_parameters = { ...config.rope_parameters, rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192, _from_rope_freqs: rf };
}

async function resolveLlama3Rope(config: Cfg): Promise<void> {
  const rp = config.rope_parameters;
  const rf = rp?._from_rope_freqs as TensorInfo | undefined;
  if (!rf) return;
  delete rp._from_rope_freqs;
  const want = await readF32(rf);
  const headDim = config.head_dim ?? Math.floor(config.hidden_size / config.num_attention_heads);
  const rotaryDim = want.length * 2;
  const base = ropeTables({ headDim, rotaryDim, theta: rp.rope_theta, scaling: null }).invFreq;
  const factor = Math.max(...want);
  for (const orig of [8192, 4096, 2048, 16384, 32768, 65536, 131072, config.max_position_embeddings]) {
    for (const [lo, hi] of [[1, 4], [1, 2], [2, 4]]) {
      const s = { rope_type: 'llama3', factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: orig };
      const inv = ropeTables({ headDim, rotaryDim, theta: rp.rope_theta, scaling: s as never, maxPositions: config.max_position_embeddings }).invFreq;
      let ok = true;
      for (let i = 0; i < want.length && ok; i++) ok = Math.abs(base[i] / inv[i] - want[i]) <= 1e-3 * want[i];
      if (ok) {
        Object.assign(rp, s);
        return;
      }
    }
  }
  throw new ConfigError('gguf.tensors["rope_freqs.weight"]', 'does not match Llama 3 RoPE scaling for any usual original context length; give a config.json with rope_parameters');
}

/** fromLlamaCpp, with the Llama 3 RoPE parameters read back from rope_freqs.weight where needed. */
export async function openLlamaCpp(g: GGUFFile, configOverride?: Cfg): Promise<LlamaCppParts> {
  const parts = fromLlamaCpp(g, configOverride);
  await resolveLlama3Rope(parts.config);
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Targets of the llama.cpp-layout writer:
 * - f32, f16, q8_0, q4_0: whole-file types, per tensor as formats/dtype.ts storedDType decides;
 * - the llama.cpp-style mixes q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k (and q4_k / q5_k, llama.cpp's
 *   aliases of Q4_K_M / Q5_K_M): per tensor as runtime/quantmix.ts decides, on the GGUF tensor's
 *   llama.cpp name and shape, i.e. what llama-quantize chooses for that file type;
 * - the single types q2_k, q3_k, iq4_nl, iq4_xs, mxfp4 (and q4_k, q5_k, q6_k with `pure`): every
 *   tensor llama.cpp quantizes in that one type, as `llama-quantize --pure` does, with llama.cpp's
 *   fallback for row lengths that are not a multiple of the block.
 */
export type LlamaCppTarget = 'f32' | 'f16' | 'q8_0' | 'q4_0' | QuantMix | Exclude<KQuantDType, 'q8_k'>;

export const LLAMACPP_TARGETS: readonly LlamaCppTarget[] = [
  'f32', 'f16', 'q8_0', 'q4_0', 'q4_k_m', 'q4_k_s', 'q5_k_m', 'q5_k_s', 'q6_k', 'q4_k', 'q5_k', 'q2_k', 'q3_k', 'iq4_nl', 'iq4_xs', 'mxfp4',
];

export interface LlamaCppWriteOptions {
  dtype: LlamaCppTarget;
  /** A K-quant `dtype` (q4_k, q5_k, q6_k included) is written as one type for every quantized tensor. */
  pure?: boolean;
  name?: string;
  keepF32?: (name: string) => boolean;
  ignore?: (name: string) => boolean;
  onProgress?: (done: number, total: number, name: string) => void;
}

interface Job {
  tpl: Template;
  hf: TensorInfo[];
  gg: { name: string; shape: number[] }[];
}

/** Dtypes a llama.cpp-layout tensor is written in. */
const WRITABLE: ReadonlySet<string> = new Set(['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs', 'mxfp4']);

function encode(f: Float32Array, dtype: DType, shape: number[], name: string): Uint8Array {
  if (!WRITABLE.has(dtype)) throw new FormatError(`tensors[${JSON.stringify(name)}].dtype`, `cannot write ${dtype} in llama.cpp layout`);
  const cols = shape.length ? shape[shape.length - 1] : 1;
  const rows = cols ? f.length / cols : 0;
  return encodeF32(dtype, f, rows, cols, name);
}

/** llama.cpp's tensor_type_fallback for a single type whose block does not divide the row length. */
function pureFallback(t: DType, cols: number): DType {
  if (cols % blockSize(t) === 0) return t;
  const f: DType = t === 'q2_k' || t === 'q3_k' ? 'q4_0' : t === 'iq4_xs' ? 'iq4_nl' : 'q8_0';
  return cols % blockSize(f) === 0 ? f : 'f16';
}

/**
 * The dtype of one GGUF output of a job. Mixes and single types are chosen on the GGUF tensor's
 * own llama.cpp name and shape (what llama-quantize sees); tensors quantized in the source keep
 * their type (formats/dtype.ts and quantmix.ts leave them as they are).
 */
function outputDType(job: Job, j: number, opts: LlamaCppWriteOptions, mix: MixModel | undefined): DType {
  const src = job.hf[0];
  const g = job.gg[j];
  const t = opts.dtype;
  if (!mix) return storedDType(src.name, g.shape, src.dtype, t as 'f32' | 'f16' | 'q8_0' | 'q4_0', opts.keepF32);
  const here: MixModel = { ...mix, ggName: () => g.name, transposed: () => false };
  const pure = isKQuant(t) && (opts.pure || !isQuantMix(t));
  // A single type goes where the Q6_K mix quantizes at all (the same tensors, f32 elsewhere).
  const d = mixStoredDType(src.name, g.shape, src.dtype, pure ? 'q6_k' : (t as QuantMix), here, opts.keepF32);
  if (!pure || isQuantized(src.dtype) || d === 'f32') return d;
  return pureFallback(t, g.shape[g.shape.length - 1]);
}

/**
 * The GGUF bytes of a job's output made from the source's quantized blocks, for transforms that
 * only move whole rows (blocks never span rows); null for the others.
 */
async function copyBlocks(ckpt: Checkpoint, job: Job, j: number): Promise<Uint8Array | null> {
  const xf = job.tpl.xf;
  if (xf.k !== 'rename' && xf.k !== 'experts' && xf.k !== 'permute' && xf.k !== 'splitRows') return null;
  const parts = await Promise.all(job.hf.map(async (h) => (await ckpt.read(h.name)).bytes));
  const s = job.hf[0].shape;
  switch (xf.k) {
    case 'rename': return parts[0];
    case 'experts': return concatBytes(parts);
    case 'permute': {
      const rb = parts[0].length / s[0];
      const p = permuteRows(s[0], xf.heads);
      const out = new Uint8Array(parts[0].length);
      for (let r = 0; r < s[0]; r++) out.set(parts[0].subarray(p[r] * rb, (p[r] + 1) * rb), r * rb);
      return out;
    }
    case 'splitRows': {
      const E = s.length === 3 ? s[0] : 1;
      const half = parts[0].length / E / 2;
      const out = new Uint8Array(E * half);
      for (let e = 0; e < E; e++) out.set(parts[0].subarray((2 * e + j) * half, (2 * e + j + 1) * half), e * half);
      return out;
    }
  }
}

/** GGUF shapes of a template's outputs for the given HF input shapes. */
function ggShapes(tpl: Template, hf: number[][]): number[][] {
  const s = hf[0];
  const xf = tpl.xf;
  switch (xf.k) {
    case 'rename': return [xf.toGG ? xf.toGG(s) : s];
    case 'negexp': return [xf.toGG ? xf.toGG(s) : s];
    case 'permute': case 'plus1': return [s];
    case 'experts': return [[hf.length, ...s]];
    case 'splitRows': {
      const I = s[s.length - 2] / 2;
      const one = s.length === 3 ? [s[0], I, s[2]] : [I, s[1]];
      return [one, one.slice()];
    }
    case 'ossGateUp': return [[s[0], s[2] / 2, s[1]], [s[0], s[2] / 2, s[1]]];
    case 'ossBias': return [[s[0], s[1] / 2], [s[0], s[1] / 2]];
    case 'ossDown': return [[s[0], s[2], s[1]]];
    case 'kvb': return [[xf.heads, s[1], xf.nope], [xf.heads, xf.v, s[1]]];
  }
}

/** GGUF f32 outputs of a template from its HF f32 inputs. */
function forward(tpl: Template, xs: Float32Array[], hf: number[][]): Float32Array[] {
  const xf = tpl.xf;
  const s = hf[0];
  switch (xf.k) {
    case 'rename': return [xs[0]];
    case 'plus1': return [xs[0].map((v) => v + 1)];
    case 'negexp': return [xs[0].map((v) => -Math.exp(v))];
    case 'permute': {
      const cols = s.length > 1 ? s[s.length - 1] : 1;
      const p = permuteRows(s[0], xf.heads);
      const out = new Float32Array(xs[0].length);
      for (let r = 0; r < s[0]; r++) out.set(xs[0].subarray(p[r] * cols, (p[r] + 1) * cols), r * cols);
      return [out];
    }
    case 'experts': {
      const out = new Float32Array(xs.reduce((a, x) => a + x.length, 0));
      let o = 0;
      for (const x of xs) {
        out.set(x, o);
        o += x.length;
      }
      return [out];
    }
    case 'splitRows': {
      const E = s.length === 3 ? s[0] : 1;
      const I = s[s.length - 2] / 2;
      const D = s[s.length - 1];
      const g = new Float32Array(E * I * D);
      const u = new Float32Array(E * I * D);
      for (let e = 0; e < E; e++) {
        g.set(xs[0].subarray(e * 2 * I * D, e * 2 * I * D + I * D), e * I * D);
        u.set(xs[0].subarray(e * 2 * I * D + I * D, (e + 1) * 2 * I * D), e * I * D);
      }
      return [g, u];
    }
    case 'ossGateUp': {
      const [E, D, I2] = s;
      const I = I2 / 2;
      const g = new Float32Array(E * I * D);
      const u = new Float32Array(E * I * D);
      for (let e = 0; e < E; e++) for (let d = 0; d < D; d++) for (let j = 0; j < I; j++) {
        g[(e * I + j) * D + d] = xs[0][(e * D + d) * I2 + 2 * j];
        u[(e * I + j) * D + d] = xs[0][(e * D + d) * I2 + 2 * j + 1];
      }
      return [g, u];
    }
    case 'ossBias': {
      const [E, I2] = s;
      const I = I2 / 2;
      const g = new Float32Array(E * I);
      const u = new Float32Array(E * I);
      for (let e = 0; e < E; e++) for (let j = 0; j < I; j++) {
        g[e * I + j] = xs[0][e * I2 + 2 * j];
        u[e * I + j] = xs[0][e * I2 + 2 * j + 1];
      }
      return [g, u];
    }
    case 'ossDown': return [transposeEach(xs[0], s[0], s[1], s[2])];
    case 'kvb': {
      const { heads: H, nope, v } = xf;
      const R = s[1];
      const k = new Float32Array(H * R * nope);
      const vb = new Float32Array(H * v * R);
      for (let h = 0; h < H; h++) {
        const base = h * (nope + v) * R;
        for (let j = 0; j < nope; j++) for (let r = 0; r < R; r++) k[(h * R + r) * nope + j] = xs[0][base + j * R + r];
        vb.set(xs[0].subarray(base + nope * R, base + (nope + v) * R), h * v * R);
      }
      return [k, vb];
    }
  }
}

/** Llama 3 rope_freqs.weight (llama.cpp reads the scaling from it): default / scaled frequencies. */
function llama3RopeFreqs(c: Cfg): Float32Array | null {
  const rp = c.rope_parameters ?? c.rope_scaling;
  const type = rp?.rope_type ?? rp?.type;
  if (type !== 'llama3') return null;
  const headDim = c.head_dim ?? Math.floor(c.hidden_size / c.num_attention_heads);
  const theta = rp.rope_theta ?? c.rope_theta ?? 10000;
  const base = ropeTables({ headDim, rotaryDim: headDim, theta, scaling: null }).invFreq;
  const inv = ropeTables({ headDim, rotaryDim: headDim, theta, scaling: rp, maxPositions: c.max_position_embeddings }).invFreq;
  return Float32Array.from(base, (b, i) => b / inv[i]);
}

/**
 * A GGUF writer in llama.cpp's layout for `ckpt`: tensors renamed and transformed as llama.cpp's
 * converter does, hyperparameters under `<arch>.*`, the tokenizer as `tokenizer.ggml.*`. Tensor
 * data is read and converted lazily while the writer streams.
 */
export function llamaCppWriterFor(ckpt: Checkpoint, opts: LlamaCppWriteOptions): { writer: GGUFWriter; tensorsByDType: Record<string, number>; keptQuantized: Record<string, number> } {
  const config = ckpt.config as Cfg;
  const mt = config?.model_type;
  const spec = ARCHS.find((a) => a.hfTypes.includes(mt));
  if (!spec) throw new ConfigError('config.model_type', `${JSON.stringify(mt)} cannot be written in llama.cpp's layout (supported: ${LLAMACPP_MODEL_TYPES.join(', ')})`);
  const templates = spec.templates(config);
  const tied = config.tie_word_embeddings === true;
  const jobs: Job[] = [];
  const expertJobs = new Map<string, Job>();
  for (const info of ckpt.tensors.values()) {
    if (opts.ignore?.(info.name)) continue;
    if (info.name === 'lm_head.weight' && tied) continue;
    let found = false;
    for (const tpl of templates) {
      const vars = match(tpl.hf, info.name);
      if (!vars) continue;
      found = true;
      if (tpl.xf.k === 'experts') {
        const key = `${tpl.hf}|${vars.i}`;
        let job = expertJobs.get(key);
        if (!job) {
          job = { tpl, hf: [], gg: [] };
          expertJobs.set(key, job);
          jobs.push(job);
        }
        job.hf[vars.e] = info;
        job.gg = [{ name: fill(tpl.gg[0], vars), shape: [] }];
      } else {
        jobs.push({ tpl, hf: [info], gg: tpl.gg.map((n) => ({ name: fill(n, vars), shape: [] })) });
      }
      break;
    }
    if (!found) throw new ConfigError(`tensors[${JSON.stringify(info.name)}]`, `has no place in llama.cpp's ${spec.arch} layout`);
  }
  for (const job of jobs) {
    for (let e = 0; e < job.hf.length; e++) {
      if (!job.hf[e]) throw new FormatError(`tensors[${JSON.stringify(fill(job.tpl.hf, { i: 0, e }))}]`, 'missing: experts must be numbered 0 … E-1 without gaps');
    }
    const shapes = ggShapes(job.tpl, job.hf.map((h) => h.shape));
    job.gg.forEach((g, j) => {
      g.shape = shapes[j];
    });
  }

  const w = new GGUFWriter();
  w.set('general.architecture', spec.arch, 'string');
  const name = opts.name ?? (typeof config._name_or_path === 'string' ? config._name_or_path : undefined);
  if (name !== undefined) w.set('general.name', name, 'string');
  spec.writeKV(config, (k, v, type) => w.set(`${spec.arch}.${k}`, v, type), (n) => ckpt.tensors.get(n)?.shape);

  const tensorsByDType: Record<string, number> = {};
  const keptQuantized: Record<string, number> = {};
  const elements = new Map<DType, number>();
  const plan: { job: Job; j: number; dtype: DType }[] = [];
  if (!LLAMACPP_TARGETS.includes(opts.dtype)) throw new ConfigError('dtype', `must be one of ${LLAMACPP_TARGETS.join(', ')}, got ${JSON.stringify(opts.dtype)}`);
  const quant = isQuantMix(opts.dtype) || isKQuant(opts.dtype);
  const mix = quant ? mixModel(ckpt.tensors.values(), config, opts.ignore) : undefined;
  for (const job of jobs) {
    for (let j = 0; j < job.gg.length; j++) {
      const src = job.hf[0];
      const dtype = outputDType(job, j, opts, mix);
      if (ggmlType(dtype) === undefined || !WRITABLE.has(dtype)) {
        throw new FormatError(`tensors[${JSON.stringify(src.name)}].dtype`, `${src.dtype} cannot be written in llama.cpp layout`);
      }
      if (isQuantized(src.dtype) && dtype === src.dtype && dtype !== opts.dtype) keptQuantized[dtype] = (keptQuantized[dtype] ?? 0) + 1;
      plan.push({ job, j, dtype });
    }
  }
  for (const { job, j, dtype } of plan) {
    tensorsByDType[dtype] = (tensorsByDType[dtype] ?? 0) + 1;
    elements.set(dtype, (elements.get(dtype) ?? 0) + numElements(job.gg[j].shape));
  }
  let bulk: DType = 'f32';
  for (const [d, n] of elements) if (n > (elements.get(bulk) ?? 0)) bulk = d;
  // llama-quantize writes the requested file type (LLAMA_FTYPE_MOSTLY_*), not the bulk type.
  w.set('general.file_type', ggufFileType(quant ? opts.dtype as QuantMix | DType : bulk), 'u32');
  w.set('general.quantization_version', 2, 'u32');
  if (ckpt.tokenizerJson !== undefined) {
    for (const [k, v, type] of tokenizerToGGUF(ckpt.tokenizerJson, ckpt.tokenizerConfig, ckpt.generationConfig ?? config)) w.set(k, v, type);
  } else {
    const n = config.vocab_size ?? ckpt.tensors.get(spec.templates(config).find((x) => x.gg[0] === 'token_embd.weight')?.hf ?? '')?.shape[0];
    for (const [k, v, type] of placeholderVocabGGUF(n)) w.set(k, v, type);
  }
  if (ckpt.chatTemplate !== undefined) w.set('tokenizer.chat_template', ckpt.chatTemplate, 'string');

  const freqs = spec.arch === 'llama' ? llama3RopeFreqs(config) : null;
  if (freqs) w.addTensor('rope_freqs.weight', 'f32', [freqs.length], f32Bytes(freqs));

  // A job's outputs are computed together; the second output of a split waits here until written.
  const pending = new Map<Job, Float32Array[]>();
  let done = 0;
  for (const { job, j, dtype } of plan) {
    const g = job.gg[j];
    w.addTensor(g.name, dtype, g.shape, async () => {
      const src = job.hf[0];
      if (isQuantized(src.dtype) && dtype === src.dtype && job.hf.every((h) => h.dtype === src.dtype)) {
        const kept = await copyBlocks(ckpt, job, j);
        if (kept) {
          opts.onProgress?.(++done, plan.length, g.name);
          return kept;
        }
      }
      let outs = pending.get(job);
      if (!outs) {
        const xs = await Promise.all(job.hf.map((h) => ckpt.readF32(h.name)));
        outs = forward(job.tpl, xs, job.hf.map((h) => h.shape));
        if (outs.length > 1) pending.set(job, outs);
      }
      if (j === job.gg.length - 1) pending.delete(job);
      const bytes = encode(outs[j], dtype, g.shape, job.hf[0].name);
      opts.onProgress?.(++done, plan.length, g.name);
      return bytes;
    });
  }
  return { writer: w, tensorsByDType, keptQuantized };
}
