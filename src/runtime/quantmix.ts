// llama.cpp-style quantization mixes (Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K): the type each tensor
// of a checkpoint is held in (quantize on load) or written in (convert), so that a file quantized by
// sparrow holds the same type per tensor as one made by llama.cpp's llama-quantize from the same
// checkpoint (no importance matrix).
//
// The choice is made on llama.cpp's own tensor names: an HF name is mapped to its llama.cpp name by
// the layout tables of formats/llamacpp-archs.ts where the family has one (else by the usual HF
// projection names), and sorted into llama.cpp's categories (token_embd, output, attn_q/k/v/qkv/
// kv_b/output, ffn_gate/up/down, other). Per mix:
//
//   tensor                          Q4_K_M / Q5_K_M            Q4_K_S / Q5_K_S             Q6_K
//   output (and token_embd if tied) q6_k (q8_0 if cols%256)    same                        same
//   token_embd (untied)             mix type                   mix type                    q6_k
//   attn_v, attn_qkv, attn_kv_b     q6_k where use_more_bits   Q4_K_S: q5_k for the first  q6_k
//                                   (over attn-v tensors)      4 attn-v tensors
//   ffn_down                        q6_k where use_more_bits   Q4_K_S: q5_k in layers      q6_k
//                                   (over layers)              < n_layer/8
//   attn_v, attn_k with 8 experts   q8_0                       q8_0                        q8_0
//   attn_output with 8 experts      Q4_K_M: q5_k               Q4_K_S: q5_k                q6_k
//   attn_v on 80-layer llama/qwen2  q4_k → q5_k (llama.cpp's LLM_TYPE_70B rule)
//   anything else                   mix type (q4_k / q5_k / q6_k)
//
// use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2 (integer division). For attn-v
// tensors i counts them in llama.cpp's tensor order (by layer, then name) and n is their number;
// for ffn_down i is the layer (MoE models) or the count of ffn_down tensors before it (dense ones),
// n the layer count.
//
// A row length (last dimension) that is not a multiple of the type's block falls back as in
// llama.cpp: q4_k → q5_0, q5_k → q5_1, q6_k → q8_0, q2_k / q3_k / iq4_xs → iq4_nl; a row not a
// multiple of 32 then gets f16. Tensors llama.cpp never quantizes (norms, routers ffn_gate_inp, conv kernels, names
// not ending in `weight`, RWKV time_mix parameters, single-row matrices, …) and the family's f32
// tensors stay f32.

import { blockSize, isQuantized, keptF32ByName, type DType, type QuantMix } from '../formats/dtype';
import { ARCHS, type Cfg } from '../formats/llamacpp-archs';
import { fill, match, type Template } from '../formats/llamacpp-tensors';

type Category =
  | 'token_embd' | 'output' | 'attn_q' | 'attn_k' | 'attn_v' | 'attn_qkv' | 'attn_kv_b' | 'attn_output'
  | 'ffn_up' | 'ffn_gate' | 'ffn_down' | 'other';

type Ftype = 'Q4_K_S' | 'Q4_K_M' | 'Q5_K_S' | 'Q5_K_M' | 'Q6_K';

const FTYPE: Record<QuantMix, Ftype> = {
  q4_k_s: 'Q4_K_S', q4_k_m: 'Q4_K_M', q4_k: 'Q4_K_M', q5_k_s: 'Q5_K_S', q5_k_m: 'Q5_K_M', q5_k: 'Q5_K_M', q6_k: 'Q6_K',
};
const DEFAULT_TYPE: Record<Ftype, DType> = { Q4_K_S: 'q4_k', Q4_K_M: 'q4_k', Q5_K_S: 'q5_k', Q5_K_M: 'q5_k', Q6_K: 'q6_k' };

/** llama.cpp's category of a tensor by its llama.cpp name (same substring tests, same order). */
function category(gg: string): Category {
  if (gg === 'output.weight') return 'output';
  if (gg === 'token_embd.weight' || gg === 'per_layer_token_embd.weight') return 'token_embd';
  if (gg.includes('attn_qkv.weight')) return 'attn_qkv';
  if (gg.includes('attn_kv_b.weight')) return 'attn_kv_b';
  if (gg.includes('attn_v.weight')) return 'attn_v';
  if (gg.includes('attn_k.weight')) return 'attn_k';
  if (gg.includes('attn_q.weight')) return 'attn_q';
  if (gg.includes('attn_output.weight')) return 'attn_output';
  if (gg.includes('ffn_up')) return 'ffn_up';
  if (gg.includes('ffn_gate')) return 'ffn_gate';
  if (gg.includes('ffn_down')) return 'ffn_down';
  return 'other';
}

const isAttnV = (c: Category) => c === 'attn_v' || c === 'attn_qkv' || c === 'attn_kv_b';

/** Name parts of tensors llama.cpp leaves unquantized (besides 1-D ones). */
const GG_NOT_QUANTIZED = [
  '_norm.weight', 'ffn_gate_inp.weight', 'ffn_gate_tid2eid.weight', 'altup', 'laurel', 'per_layer_model_proj',
  'ssm_conv1d', 'shortconv.conv.weight', 'indexer.k_proj.weight', 'indexer.q_proj.weight', 'attn_rel_b.weight',
  'time_mix_first.weight', 'time_mix_w0.weight', 'time_mix_w1.weight', 'time_mix_w2.weight', 'time_mix_v0.weight',
  'time_mix_v1.weight', 'time_mix_v2.weight', 'time_mix_a0.weight', 'time_mix_a1.weight', 'time_mix_a2.weight',
  'time_mix_g1.weight', 'time_mix_g2.weight', 'time_mix_decay_w1.weight', 'time_mix_decay_w2.weight', 'time_mix_lerp_fused.weight',
];

function ggQuantizable(gg: string): boolean {
  if (!gg.endsWith('weight')) return false;
  if (gg === 'position_embd.weight' || gg === 'token_types.weight') return false;
  return !GG_NOT_QUANTIZED.some((s) => gg.includes(s));
}

/** A llama.cpp-like name for HF tensors of families without a llama.cpp layout table. */
function heuristicName(name: string): string {
  const m = /(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\./.exec(name);
  const blk = m ? `blk.${m[1]}.` : '';
  // Sparse-attention indexers keep their own names (llama.cpp leaves `indexer.k_proj` / `q_proj` unquantized).
  if (name.includes('.indexer.')) return `${blk}${name}`;
  const rules: [RegExp, string][] = [
    [/(^|\.)(embed_tokens|embeddings|wte|word_embeddings)\.weight$/, 'token_embd.weight'],
    [/^(lm_head|head|embed_out)\.weight$/, 'output.weight'],
    [/\.(qkv_proj|query_key_value|c_attn|Wqkv)\.weight$/, 'attn_qkv.weight'],
    [/\.kv_b_proj\.weight$/, 'attn_kv_b.weight'],
    // Only *_proj names: RWKV's attention.key / .value are llama.cpp time_mix_* tensors (no category).
    [/\.q_proj\.weight$/, 'attn_q.weight'],
    [/\.k_proj\.weight$/, 'attn_k.weight'],
    [/\.v_proj\.weight$/, 'attn_v.weight'],
    [/(attn|attention)\.(o_proj|out_proj|dense|c_proj)\.weight$/, 'attn_output.weight'],
    [/\.experts\.\d+\.(down_proj|w2)\.weight$/, 'ffn_down_exps.weight'],
    [/\.experts\.\d+\.(gate_proj|w1)\.weight$/, 'ffn_gate_exps.weight'],
    [/\.experts\.\d+\.(up_proj|w3)\.weight$/, 'ffn_up_exps.weight'],
    [/\.(down_proj|w2|fc2|dense_4h_to_h)\.weight$/, 'ffn_down.weight'],
    [/\.(gate_proj|w1)\.weight$/, 'ffn_gate.weight'],
    [/\.(up_proj|w3|fc1|dense_h_to_4h)\.weight$/, 'ffn_up.weight'],
  ];
  for (const [re, gg] of rules) if (re.test(name)) return gg.startsWith('token_embd') || gg.startsWith('output') ? gg : `${blk}${gg}`;
  return `${blk}${name}`;
}

const layerOf = (gg: string): number => {
  const m = /^blk\.(\d+)\./.exec(gg);
  return m ? Number(m[1]) : -1;
};

/** What the per-tensor choice needs to know of the whole model (llama.cpp's quantize state). */
export interface MixModel {
  /** Layer count (llama.cpp n_layer). */
  nLayer: number;
  /** Routed experts per MoE layer (llama.cpp n_expert; 0 for dense models). */
  nExpert: number;
  /** No output head of its own: token_embd is quantized as the output. */
  tied: boolean;
  /** llama.cpp architecture name, when the family has a llama.cpp layout. */
  arch?: string;
  /** llama.cpp name of an HF tensor (mapped or heuristic). */
  ggName(name: string): string;
  /** Whether llama.cpp holds the tensor transposed (gpt-oss experts: its rows are the HF second-to-last dimension). */
  transposed(name: string): boolean;
  /** Position of each attn-v-like llama.cpp tensor in llama.cpp's order, and their number. */
  attnV: Map<string, number>;
  /** Position of each ffn_down llama.cpp tensor in llama.cpp's order. */
  ffnDown: Map<string, number>;
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/**
 * The model-wide facts of a mix for a checkpoint's tensors (names and shapes, HF) and its config;
 * `ignore` names tensors the family never reads (not written to llama.cpp files either).
 */
export function mixModel(tensors: Iterable<{ name: string }>, config: Cfg, ignore?: (name: string) => boolean): MixModel {
  const spec = ARCHS.find((a) => a.hfTypes.includes(config?.model_type));
  let templates: Template[] = [];
  if (spec) {
    try {
      templates = spec.templates(config);
    } catch {
      templates = [];
    }
  }
  const cache = new Map<string, { gg: string; transposed: boolean }>();
  const lookup = (name: string) => {
    let hit = cache.get(name);
    if (hit) return hit;
    hit = { gg: heuristicName(name), transposed: false };
    for (const tpl of templates) {
      const vars = match(tpl.hf, name);
      if (vars) {
        hit = { gg: fill(tpl.gg[0], vars), transposed: tpl.xf.k === 'ossGateUp' || tpl.xf.k === 'ossDown' };
        break;
      }
    }
    cache.set(name, hit);
    return hit;
  };
  const ggName = (name: string) => lookup(name).gg;
  const transposed = (name: string) => lookup(name).transposed;
  const names = [...tensors].map((t) => t.name).filter((n) => !ignore?.(n));
  const tiedCfg = config?.tie_word_embeddings === true;
  const gg = new Set<string>();
  let maxLayer = -1;
  for (const n of names) {
    // llama.cpp files of tied models carry no output tensor (formats/llamacpp.ts skips lm_head).
    if (tiedCfg && n === 'lm_head.weight') continue;
    const g = ggName(n);
    gg.add(g);
    maxLayer = Math.max(maxLayer, layerOf(g));
  }
  // llama.cpp's tensor order: by layer (tensors outside layers first), then by name.
  const order = [...gg].sort((a, b) => layerOf(a) - layerOf(b) || (a < b ? -1 : a > b ? 1 : 0));
  const attnV = new Map<string, number>();
  const ffnDown = new Map<string, number>();
  for (const g of order) {
    const c = category(g);
    if (isAttnV(c)) attnV.set(g, attnV.size);
    // llama.cpp counts ffn_down tensors as it quantizes them (biases and the like are skipped).
    else if (c === 'ffn_down' && ggQuantizable(g)) ffnDown.set(g, ffnDown.size);
  }
  const nLayer = num(config?.num_hidden_layers) || num(config?.n_layer) || num(config?.n_layers) || maxLayer + 1;
  const nExpert = num(config?.num_local_experts) || num(config?.num_experts) || num(config?.n_routed_experts);
  const tied = ![...gg].some((g) => category(g) === 'output');
  return { nLayer, nExpert, tied, arch: spec?.arch, ggName, transposed, attnV, ffnDown };
}

const div = (a: number, b: number) => Math.trunc(a / b);

function useMoreBits(i: number, n: number): boolean {
  return i < div(n, 8) || i >= div(7 * n, 8) || (i - div(n, 8)) % 3 === 2;
}

/**
 * The type of one quantizable tensor under `mix` (llama.cpp's llama_tensor_get_type for the
 * mix's file type, then its shape fallback), given the HF name, the HF shape and the model facts.
 * 'f32' for tensors llama.cpp does not quantize.
 */
export function mixTensorDType(name: string, shape: readonly number[], mix: QuantMix, m: MixModel): DType {
  const gg = m.ggName(name);
  // ggml counts dimensions up to the last one above 1: a single row is a vector, never quantized.
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  if (shape.length < 2 || rows <= 1 || !ggQuantizable(gg)) return 'f32';
  const ftype = FTYPE[mix];
  const def = DEFAULT_TYPE[ftype];
  // llama.cpp's row length (ne[0]); a transposed tensor is quantized here along the HF rows and
  // re-blocked along llama.cpp's by the family, so both lengths must hold whole blocks.
  const hfCols = shape[shape.length - 1];
  const cols = m.transposed(name) && shape.length >= 2 ? shape[shape.length - 2] : hfCols;
  const cat = category(gg);
  let t: DType = def;
  if (cat === 'output' || (m.tied && cat === 'token_embd')) {
    t = cols % blockSize(def) !== 0 ? 'q8_0' : 'q6_k';
  } else if (cat === 'token_embd') {
    t = def;
  } else if (isAttnV(cat)) {
    const i = m.attnV.get(gg) ?? 0;
    if ((ftype === 'Q4_K_M' || ftype === 'Q5_K_M') && useMoreBits(i, m.attnV.size)) t = 'q6_k';
    else if (ftype === 'Q4_K_S' && i < 4) t = 'q5_k';
    if ((m.arch === 'llama' || m.arch === 'qwen2') && m.nLayer === 80 && t === 'q4_k') t = 'q5_k';
    if (m.nExpert === 8) t = 'q8_0';
  } else if (cat === 'attn_k') {
    if (m.nExpert === 8) t = 'q8_0';
  } else if (cat === 'ffn_down') {
    const i = m.nExpert > 1 ? Math.max(0, layerOf(gg)) : (m.ffnDown.get(gg) ?? 0);
    const n = m.nLayer;
    if ((ftype === 'Q4_K_M' || ftype === 'Q5_K_M') && useMoreBits(i, n)) t = 'q6_k';
    else if (ftype === 'Q4_K_S' && i < div(n, 8)) t = 'q5_k';
  } else if (cat === 'attn_output') {
    if (m.nExpert === 8 && (ftype === 'Q4_K_S' || ftype === 'Q4_K_M')) t = 'q5_k';
  }
  const f = fallback(t, cols);
  return hfCols === cols ? f : fallback(f, hfCols);
}

/** llama.cpp's fallback for a row length that is not a multiple of the block (see the top of this file). */
function fallback(t: DType, cols: number): DType {
  if (cols % blockSize(t) === 0) return t;
  let f: DType;
  switch (t) {
    case 'q2_k': case 'q3_k': case 'iq4_xs': f = 'iq4_nl'; break;
    case 'q4_k': f = 'q5_0'; break;
    case 'q5_k': f = 'q5_1'; break;
    default: f = 'q8_0';
  }
  return cols % blockSize(f) === 0 ? f : 'f16';
}

const FLOAT: ReadonlySet<string> = new Set(['f32', 'f16', 'bf16', 'f64']);

/**
 * The dtype one tensor is held in (loading) or written in (conversion) under a mix: non-float
 * tensors keep their dtype, tensors already quantized in the source keep their blocks, vectors and
 * the family's and formats/dtype.ts's f32 tensors are f32, every other one follows mixTensorDType.
 */
export function mixStoredDType(name: string, shape: readonly number[], src: DType, mix: QuantMix, m: MixModel, keepF32?: (name: string) => boolean): DType {
  if (isQuantized(src)) return src;
  if (!FLOAT.has(src)) return src;
  if (shape.length < 2 || keepF32?.(name) || keptF32ByName(name)) return 'f32';
  return mixTensorDType(name, shape, mix, m);
}
