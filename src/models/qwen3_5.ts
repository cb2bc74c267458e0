// Qwen3.5 (Qwen3_5ForCausalLM / Qwen3_5MoeForCausalLM, and the language model of
// Qwen3_5ForConditionalGeneration / Qwen3_5MoeForConditionalGeneration): Qwen3-Next's hybrid of Gated
// DeltaNet layers and gated softmax attention layers (`layer_types`, every full_attention_interval-th
// layer full), each followed by a dense SwiGLU MLP (qwen3_5) or, on every layer, a sparse MoE with a
// sigmoid-gated shared expert (qwen3_5_moe: softmax → top-k → renormalised, always). Every RMSNorm
// except the gated one is zero-centred: x̂·(1+w).
//
// The Gated DeltaNet is Qwen3-Next's (see qwen3_next.ts) with plain projections instead of the
// per-key-head interleaved in_proj_qkvz / in_proj_ba:
//   [q k v] = in_proj_qkv x   (rows [q (Hk·dk) | k (Hk·dk) | v (Hv·dv)]),  z = in_proj_z x,
//   b = in_proj_b x,  a = in_proj_a x.
// Value head h reads key head h / (Hv/Hk) (HF repeat_interleave).
//
// The attention RoPE is multimodal (mrope_section over temporal / height / width positions); for text
// the three position components are the token position, so it is the plain RoPE of the first
// head_dim · partial_rotary_factor dims (rotate-half).
//
// Multimodal checkpoints: config.json holds the language model's fields under `text_config` and its
// weights live under `model.language_model.` (the vision tower under `model.visual.`, never read).

import type { Weight } from '../kernels/types';
import { rowBytes } from '../kernels/types';
import { ConfigError } from '../formats/errors';
import type { Ctx } from '../layers/context';
import { parseActivation } from '../layers/mlp';
import { attentionShape, bool, int, layerTypes, num, obj, rejectIf, ropeParams, type RawConfig } from './common';
import type { Family, Net } from './net';
import { buildQwenHybrid, GatedDeltaProjected, parseGatedDelta, type GatedDeltaNetConfig, type Qwen3NextLayerType, type Qwen3NextMoeConfig, type QwenHybridShape } from './qwen3_next';

/**
 * The language model's fields of a config: `text_config` of a multimodal (…ForConditionalGeneration)
 * config, else the config itself.
 */
export function textConfig(c: RawConfig): RawConfig {
  const t = c.text_config;
  if (t === undefined || t === null) return c;
  rejectIf(typeof t !== 'object' || Array.isArray(t), 'text_config', 'must be an object');
  return t as RawConfig;
}

/** Qwen3.5's Gated DeltaNet: the Qwen3-Next mixer over separate in_proj_qkv / in_proj_z / in_proj_b / in_proj_a. */
export class Qwen35GatedDeltaNet extends GatedDeltaProjected {
  readonly qkv: Weight;
  readonly z: Weight;
  /** in_proj_b and in_proj_a stacked as rows [b (Hv) | a (Hv)] (a copy made at load). */
  readonly ba: Weight;

  constructor(ctx: Ctx, prefix: string, cfg: GatedDeltaNetConfig) {
    super(ctx, prefix, cfg);
    const { ws } = ctx;
    const { hidden, Hv, dv } = cfg;
    this.qkv = ws.mat(`${prefix}.in_proj_qkv.weight`, this.convDim, hidden);
    this.z = ws.mat(`${prefix}.in_proj_z.weight`, Hv * dv, hidden);
    const b = ws.mat(`${prefix}.in_proj_b.weight`, Hv, hidden);
    const a = ws.mat(`${prefix}.in_proj_a.weight`, Hv, hidden);
    if (a.dtype !== b.dtype) throw new ConfigError(`tensors["${prefix}.in_proj_a.weight"]`, `is held as ${a.dtype} but in_proj_b as ${b.dtype}; they must match`);
    const rb = rowBytes(b.dtype, hidden), arena = ctx.k.arena;
    const bytes = new Uint8Array(2 * Hv * rb);
    bytes.set(arena.u8(b.ptr, Hv * rb), 0);
    bytes.set(arena.u8(a.ptr, Hv * rb), Hv * rb);
    this.ba = { name: `${prefix}.in_proj_b+in_proj_a`, ptr: arena.put(bytes), dtype: b.dtype, rows: 2 * Hv, cols: hidden };
  }
}

/** The sparse MoE of Qwen3.5-MoE layers: routed experts plus a sigmoid-gated shared expert, always renormalised. */
export type Qwen35MoeConfig = Omit<Qwen3NextMoeConfig, 'renormalize'>;

export interface Qwen35Config extends QwenHybridShape {
  /** Every layer's feed-forward: the MoE (qwen3_5_moe), else null and a dense MLP of denseInter (qwen3_5). */
  moe: Qwen35MoeConfig | null;
}

/** Reads a Qwen3.5 config (or the text_config of a multimodal one); `sparse` for the MoE variant. */
export function parseQwen35(c: RawConfig, sparse: boolean): Qwen35Config {
  const t = textConfig(c);
  if (t === c) return parseText(c, c, sparse);
  try {
    return parseText(c, t, sparse);
  } catch (e) {
    // Errors name the field where it is: under text_config.
    if (e instanceof ConfigError && e.field.startsWith('config.')) throw new ConfigError(`config.text_config.${e.field.slice(7)}`, e.detail);
    throw e;
  }
}

function parseText(c: RawConfig, t: RawConfig, sparse: boolean): Qwen35Config {
  const hidden = int(t, 'hidden_size');
  const nLayers = int(t, 'num_hidden_layers');
  const attn = attentionShape(t, hidden, 256);
  const vocab = int(t, 'vocab_size');
  const eps = num(t, 'rms_norm_eps', 1e-6);
  const actName = t.hidden_act ?? 'silu';
  const act = parseActivation(actName);
  // The conv activation is ACT2FN[hidden_act]; the conv kernel implements SiLU.
  rejectIf(act !== 'silu', 'hidden_act', `${JSON.stringify(actName)} is not supported (Qwen3.5 uses silu for its MLPs and convolutions)`);
  const gdn = parseGatedDelta(t, hidden, eps);
  const interval = int(t, 'full_attention_interval', 4);
  rejectIf(interval < 1, 'full_attention_interval', 'must be ≥ 1');
  const types = layerTypes<Qwen3NextLayerType>(t, nLayers, ['linear_attention', 'full_attention'], (i) => ((i + 1) % interval ? 'linear_attention' : 'full_attention'));
  const prf = num(obj(t.rope_parameters), 'partial_rotary_factor', num(t, 'partial_rotary_factor', 0.25));
  const rotaryDim = Math.floor(attn.headDim * prf);
  rejectIf(rotaryDim < 2 || rotaryDim % 2 !== 0, 'partial_rotary_factor', `gives ${rotaryDim} rotary dims of head_dim ${attn.headDim}; need an even number ≥ 2`);

  let moe: Qwen35MoeConfig | null = null;
  if (sparse) {
    const nExperts = int(t, 'num_experts', 256);
    const topk = int(t, 'num_experts_per_tok', 8);
    rejectIf(nExperts < 1, 'num_experts', 'must be ≥ 1');
    rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
    moe = { nExperts, topk, inter: int(t, 'moe_intermediate_size', 512), sharedInter: int(t, 'shared_expert_intermediate_size', 512) };
  }
  // The LM head is tied when the language model's config says so (transformers reads the text config).
  const tie = t.tie_word_embeddings ?? c.tie_word_embeddings ?? false;
  return {
    hidden, nLayers, vocab, attn, eps, act, gdn, layerTypes: types, rotaryDim, rope: ropeParams(t), attnBias: bool(t, 'attention_bias', false),
    moe, denseInter: sparse ? null : int(t, 'intermediate_size', 12288), tieEmbeddings: Boolean(tie),
  };
}

export function buildQwen35(ctx: Ctx, c: Qwen35Config): Net {
  // Language-model weights: `model.` (…ForCausalLM) or `model.language_model.` (…ForConditionalGeneration).
  const m = ctx.ws.has('model.language_model.embed_tokens.weight') ? 'model.language_model' : 'model';
  // Qwen3.5-MoE renormalises the top-k weights always.
  const moe = c.moe ? { ...c.moe, renormalize: true } : null;
  return buildQwenHybrid(ctx, c, m, (p) => new Qwen35GatedDeltaNet(ctx, p, c.gdn), () => moe);
}

const keepF32 = (name: string): boolean => name.endsWith('.conv1d.weight') || name.endsWith('.A_log') || name.endsWith('.dt_bias');
// Multi-token-prediction heads and the vision tower (HF _keys_to_ignore_on_load_unexpected).
const ignore = (name: string): boolean => name.startsWith('mtp.') || name.startsWith('model.visual.');

export const qwen35: Family<Qwen35Config> = {
  types: ['qwen3_5', 'qwen3_5_text'],
  keepF32, ignore,
  parse: (c) => parseQwen35(c, false),
  build: buildQwen35,
};

export const qwen35Moe: Family<Qwen35Config> = {
  types: ['qwen3_5_moe', 'qwen3_5_moe_text'],
  keepF32, ignore,
  parse: (c) => parseQwen35(c, true),
  build: buildQwen35,
};
