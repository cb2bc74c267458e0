// Gemma 4 (Gemma4ForCausalLM, model_type "gemma4_text"; and the language model of
// Gemma4ForConditionalGeneration, model_type "gemma4", whose config holds it under `text_config` and its
// weights under `model.language_model.`; the vision and audio towers are never read).
//
// A sandwich-normed decoder of sliding-window and full attention layers (`layer_types`, the last layer
// always full). RMSNorms multiply by their weight (x̂·w, no 1 + w). Per layer:
//   h = post_attention_layernorm(attn(input_layernorm(x)));  x ← x + h
//   m = mlp(pre_feedforward_layernorm(x))
//   with enable_moe_block: m = post_feedforward_layernorm_1(m)
//                             + post_feedforward_layernorm_2(moe(pre_feedforward_layernorm_2(x)))
//   x ← x + post_feedforward_layernorm(m)
//   with per-layer inputs: x ← x + post_per_layer_input_norm(per_layer_projection(
//                                       gelu(per_layer_input_gate(x)) ⊙ ple_i))
//   x ← x · layer_scalar
// Attention: q, k RMSNorm per head (weighted), v RMSNorm per head without weight, RoPE, softmax scale 1.
// Each layer's head width and kv heads come from `per_layer_config` (full layers usually wider); with
// attention_k_eq_v full layers have no v_proj and take v from the raw k projection. The last
// num_kv_shared_layers layers have no k/v of their own: each attends over the cache of the last
// earlier layer of its type. Sliding layers use RoPE `rope_parameters.sliding_attention`, full ones
// `full_attention`, typically "proportional": the first ⌊p·D/2⌋ of the D/2 frequency pairs rotate at
// θ^(−2i/D), the rest not at all.
// Per-layer input embeddings (hidden_size_per_layer_input P > 0), for all L layers at once:
//   ple = (RMSNorm_P(per_layer_model_projection(e) · hidden^−½) + embed_tokens_per_layer(ids) · √P) · 2^−½
// with e the scaled token embeddings, split into L rows of P.
// MoE router: RMSNorm (no weight) of x · scale · hidden^−½ → proj → softmax → top-k, renormalised, times
// per_expert_scale of each pick.
// Under the load option attention { mode: 'topk' } each full layer with its own cache keeps its page key
// bounds; a KV-shared full layer attends sparsely over its source layer's cache and bounds (folding the
// source's keys of the pass again, which leaves the bounds as they are); sliding layers keep their window.

import { ConfigError } from '../formats/errors';
import type { Weight } from '../kernels/types';
import { attentionPages, pageBoundsState, type PageState } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { parseActivation } from '../layers/mlp';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import { add, attention, copy, embed, gatedAct, gatedFfn, kvAppend, linear, matmul, moe, mulRow, norm, rope, scale, softcap, type GatedAct, type GatedWeights, type MoeSpec, type NormSpec, type RopeSpec } from '../graph/ops';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import { bool, int, num, obj, rejectIf, ropeParams, ropeSpec, type RawConfig } from './common';
import type { Family, Net } from './net';
import { expertWeights } from './shared';

export type Gemma4LayerType = 'sliding_attention' | 'full_attention';

export interface Gemma4Layer {
  type: Gemma4LayerType;
  headDim: number;
  nKv: number;
  /** The layer whose K/V cache this one attends over (itself unless KV is shared). */
  kvSource: number;
  /** Full layers with attention_k_eq_v: v is the raw k projection. */
  kEqV: boolean;
  /** intermediate_size of the dense MLP (doubled on KV-shared layers with use_double_wide_mlp). */
  inter: number;
}

export interface Gemma4Config {
  /** 'model.' (Gemma4ForCausalLM) or 'model.language_model.' (Gemma4ForConditionalGeneration). */
  prefix: string;
  hidden: number;
  nLayers: number;
  vocab: number;
  nHeads: number;
  /** rms_norm_eps */
  eps: number;
  act: GatedAct;
  attnBias: boolean;
  /** sliding_window of the sliding layers. */
  window: number;
  layers: Gemma4Layer[];
  /** rope_parameters of each layer type. */
  rope: Record<Gemma4LayerType, RawConfig>;
  maxPositions: number;
  /** hidden_size_per_layer_input (0: no per-layer inputs) and vocab_size_per_layer_input. */
  ple: { dim: number; vocab: number } | null;
  moe: { nExperts: number; topk: number; inter: number } | null;
  finalSoftcap: number | null;
  tieEmbeddings: boolean;
}

/** Per-layer attributes a per_layer_config entry may change. */
const PER_LAYER_FIELDS = new Set(['head_dim', 'num_key_value_heads']);

function parseText(c: RawConfig, t: RawConfig, composite: boolean): Gemma4Config {
  const hidden = int(t, 'hidden_size', 2304);
  const nLayers = int(t, 'num_hidden_layers', 30);
  const nHeads = int(t, 'num_attention_heads', 8);
  const nKv = int(t, 'num_key_value_heads', 4);
  const headDim = int(t, 'head_dim', 256);
  rejectIf(nLayers < 1, 'num_hidden_layers', 'must be ≥ 1');
  const lt = t.layer_types;
  const types: Gemma4LayerType[] = Array.isArray(lt)
    ? lt.map((x, i) => {
      rejectIf(x !== 'sliding_attention' && x !== 'full_attention', `layer_types[${i}]`, `${JSON.stringify(x)} is not sliding_attention or full_attention`);
      return x as Gemma4LayerType;
    })
    : Array.from({ length: nLayers }, (_, i) => ((i + 1) % 6 ? 'sliding_attention' : 'full_attention'));
  rejectIf(types.length !== nLayers, 'layer_types', `has ${types.length} entries for ${nLayers} layers`);
  // Gemma4TextConfig forces the last layer to full attention.
  types[nLayers - 1] = 'full_attention';
  const bidi = t.use_bidirectional_attention ?? null;
  rejectIf(bidi !== null && bidi !== 'vision', 'use_bidirectional_attention', `${JSON.stringify(bidi)} is not supported (null, or "vision": text attends causally)`);
  const kEqV = bool(t, 'attention_k_eq_v', false);

  // Per-layer head width and kv heads: per_layer_config (keyed by layer index or layer type), or, in
  // configs written before it existed, global_head_dim / num_global_key_value_heads on full layers.
  const plc = t.per_layer_config;
  const overrides: RawConfig[] = Array.from({ length: nLayers }, () => ({}));
  if (plc !== undefined && plc !== null) {
    rejectIf(typeof plc !== 'object' || Array.isArray(plc), 'per_layer_config', 'must be an object keyed by layer index');
    for (const [key, val] of Object.entries(plc as RawConfig)) {
      const field = `per_layer_config.${key}`;
      rejectIf(val === null || typeof val !== 'object' || Array.isArray(val), field, 'must be an object');
      const idx = /^\d+$/.test(key) ? [Number(key)] : types.flatMap((ty, i) => (ty === key ? [i] : []));
      rejectIf(idx.length === 0 || idx.some((i) => i >= nLayers), field, `names no layer of the ${nLayers}`);
      for (const [k, v] of Object.entries(val as RawConfig)) {
        if (PER_LAYER_FIELDS.has(k)) {
          for (const i of idx) overrides[i][k] = v;
        } else if (k === 'skip') {
          rejectIf(v !== null && !(Array.isArray(v) && v.length === 0), `${field}.skip`, `skipping sublayers (${JSON.stringify(v)}) is not supported`);
        } else {
          rejectIf(JSON.stringify(v) !== JSON.stringify(t[k]), `${field}.${k}`, `a per-layer ${k} (${JSON.stringify(v)}, the model's ${JSON.stringify(t[k])}) is not supported`);
        }
      }
    }
  } else {
    const globalHd = t.global_head_dim ?? 512;
    const globalKv = t.num_global_key_value_heads ?? null;
    types.forEach((ty, i) => {
      if (ty !== 'full_attention') return;
      overrides[i].head_dim = globalHd;
      if (kEqV && globalKv !== null) overrides[i].num_key_value_heads = globalKv;
    });
  }

  const nShared = int(t, 'num_kv_shared_layers', 0);
  rejectIf(nShared >= nLayers, 'num_kv_shared_layers', `${nShared} leaves no layer with its own keys and values (of ${nLayers})`);
  const firstShared = nLayers - nShared;
  const doubleWide = bool(t, 'use_double_wide_mlp', false);
  const inter = int(t, 'intermediate_size', 9216);
  const layers: Gemma4Layer[] = types.map((type, i) => {
    const o = overrides[i];
    const field = `per_layer_config.${i}`;
    const hd = o.head_dim === undefined ? headDim : int(o, 'head_dim');
    const kv = o.num_key_value_heads === undefined ? nKv : int(o, 'num_key_value_heads');
    rejectIf(hd < 2 || hd % 2 !== 0, o.head_dim === undefined ? 'head_dim' : `${field}.head_dim`, `must be an even number ≥ 2, got ${hd}`);
    rejectIf(kv < 1 || nHeads % kv !== 0, o.num_key_value_heads === undefined ? 'num_key_value_heads' : `${field}.num_key_value_heads`, `${kv} does not divide num_attention_heads ${nHeads}`);
    let kvSource = i;
    if (nShared > 0 && i >= firstShared) {
      kvSource = types.slice(0, firstShared).lastIndexOf(type);
      rejectIf(kvSource < 0, 'num_kv_shared_layers', `layer ${i} (${type}) shares the keys and values of an earlier ${type} layer, and there is none before layer ${firstShared}`);
    }
    return { type, headDim: hd, nKv: kv, kvSource, kEqV: kEqV && type === 'full_attention', inter: doubleWide && nShared > 0 && i >= firstShared ? 2 * inter : inter };
  });
  layers.forEach((l, i) => {
    const s = layers[l.kvSource];
    rejectIf(s.headDim !== l.headDim || s.nKv !== l.nKv, 'num_kv_shared_layers', `layer ${i} shares the cache of layer ${l.kvSource}, whose heads differ (${s.nKv}×${s.headDim} vs ${l.nKv}×${l.headDim})`);
  });

  const rp = obj(t.rope_parameters);
  const rope: Record<Gemma4LayerType, RawConfig> = {
    sliding_attention: obj(rp.sliding_attention ?? { rope_type: 'default', rope_theta: 10000 }),
    full_attention: obj(rp.full_attention ?? { rope_type: 'proportional', partial_rotary_factor: 0.25, rope_theta: 1_000_000 }),
  };
  for (const ty of ['sliding_attention', 'full_attention'] as const) {
    const p = rope[ty], rt = p.rope_type ?? 'default';
    // Gemma4's default RoPE spans the whole head; other scaled types would rotate only part of it,
    // which Gemma4's rotate-half over the whole head cannot take.
    rejectIf(rt !== 'default' && rt !== 'proportional' && (p.partial_rotary_factor ?? 1) !== 1, `rope_parameters.${ty}.partial_rotary_factor`, `is only supported with rope_type default or proportional (got ${JSON.stringify(rt)})`);
  }

  const pleDim = int(t, 'hidden_size_per_layer_input', 256);
  const vocab = int(t, 'vocab_size', 262144);
  const pleVocab = int(t, 'vocab_size_per_layer_input', 262144);
  if (pleDim > 0) rejectIf(pleVocab < vocab, 'vocab_size_per_layer_input', `${pleVocab} is smaller than vocab_size ${vocab}`);
  let moeCfg: Gemma4Config['moe'] = null;
  if (bool(t, 'enable_moe_block', false)) {
    const nExperts = int(t, 'num_experts');
    const topk = int(t, 'top_k_experts');
    rejectIf(nExperts < 1, 'num_experts', 'must be ≥ 1');
    rejectIf(topk < 1 || topk > nExperts, 'top_k_experts', `${topk} must be in [1, ${nExperts}]`);
    moeCfg = { nExperts, topk, inter: int(t, 'moe_intermediate_size') };
  }
  const soft = t.final_logit_softcapping ?? null;
  rejectIf(soft !== null && (typeof soft !== 'number' || !(soft >= 0)), 'final_logit_softcapping', `must be a number ≥ 0 or null, got ${JSON.stringify(soft)}`);
  const tie = composite ? c.tie_word_embeddings ?? t.tie_word_embeddings ?? true : t.tie_word_embeddings ?? true;
  return {
    prefix: composite ? 'model.language_model.' : 'model.',
    hidden, nLayers, vocab, nHeads,
    eps: num(t, 'rms_norm_eps', 1e-6),
    act: parseActivation(t.hidden_activation ?? 'gelu_pytorch_tanh', 'hidden_activation'),
    attnBias: bool(t, 'attention_bias', false),
    window: int(t, 'sliding_window', 512),
    layers, rope,
    maxPositions: int(t, 'max_position_embeddings', 131072),
    ple: pleDim > 0 ? { dim: pleDim, vocab: pleVocab } : null,
    moe: moeCfg,
    finalSoftcap: soft === null || soft === 0 ? null : (soft as number),
    tieEmbeddings: Boolean(tie),
  };
}

/** Reads a Gemma 4 text config, or the text_config of a composite (multimodal) one. */
export function parseGemma4(c: RawConfig): Gemma4Config {
  const t = c.text_config;
  if (t === undefined || t === null) return parseText(c, c, false);
  rejectIf(typeof t !== 'object' || Array.isArray(t), 'text_config', 'must be an object (the language model config)');
  try {
    return parseText(c, t as RawConfig, true);
  } catch (e) {
    // Errors name the field where it is: under text_config.
    if (e instanceof ConfigError && e.field.startsWith('config.') && !e.field.startsWith('config.text_config')) {
      throw new ConfigError(`config.text_config.${e.field.slice(7)}`, e.detail);
    }
    throw e;
  }
}

/**
 * RoPE of one layer type at head width D: 'proportional' rotates the first ⌊p·D/2⌋ pairs (i, i + D/2)
 * at θ^(−2i/D) / factor and leaves the others (zero frequencies); every other type as common.ts reads it.
 */
function layerRope(c: Gemma4Config, type: Gemma4LayerType, D: number): RopeSpec {
  const p = c.rope[type];
  if ((p.rope_type ?? 'default') !== 'proportional') {
    return ropeSpec(ropeParams({ rope_parameters: p, max_position_embeddings: c.maxPositions }), D);
  }
  const field = `rope_parameters.${type}`;
  const theta = num(p, 'rope_theta');
  rejectIf(!(theta > 1), `${field}.rope_theta`, `must be > 1, got ${theta}`);
  const factor = num(p, 'factor', 1);
  rejectIf(!(factor > 0), `${field}.factor`, `must be > 0, got ${factor}`);
  const frac = num(p, 'partial_rotary_factor', 1);
  const angles = Math.floor((frac * D) / 2);
  rejectIf(!(frac >= 0) || angles > D / 2, `${field}.partial_rotary_factor`, `${frac} is outside [0, 1]`);
  const f = Math.fround;
  const inv = new Float32Array(D / 2);
  for (let i = 0; i < angles; i++) inv[i] = f(f(1 / f(Math.pow(f(theta), f((2 * i) / D)))) / factor);
  return { invFreq: inv, rotaryDim: D, style: 'neox', attentionFactor: 1 };
}

/** Gemma 4 attention; a KV-shared layer reads the caches of its source layer and writes none. */
class Gemma4Attention {
  readonly q: Weight;
  readonly k: Weight | null;
  readonly v: Weight | null;
  readonly o: Weight;
  readonly bq: number;
  readonly bk: number;
  readonly bv: number;
  readonly bo: number;
  readonly qNorm: number;
  readonly kNorm: number;
  readonly rope: RopeSpec;
  readonly window: number | undefined;
  kState!: RegionSpec;
  vState!: RegionSpec;
  /** Page key bounds under the load option attention { mode: 'topk' } (null: dense, sliding, or KV-shared). */
  pageState: PageState | null = null;
  private declaredFor = -1;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly c: Gemma4Config, readonly l: Gemma4Layer, readonly source: Gemma4Attention | null) {
    const { ws } = ctx;
    const { hidden, nHeads, attnBias } = c;
    const { headDim: D, nKv } = l;
    this.q = ws.mat(`${prefix}.q_proj.weight`, nHeads * D, hidden);
    this.o = ws.mat(`${prefix}.o_proj.weight`, hidden, nHeads * D);
    this.bq = attnBias ? ws.vec(`${prefix}.q_proj.bias`, nHeads * D) : 0;
    this.bo = attnBias ? ws.vec(`${prefix}.o_proj.bias`, hidden) : 0;
    this.qNorm = ws.vec(`${prefix}.q_norm.weight`, D);
    if (source) {
      this.k = null;
      this.v = null;
      this.bk = this.bv = this.kNorm = 0;
    } else {
      this.k = ws.mat(`${prefix}.k_proj.weight`, nKv * D, hidden);
      this.bk = attnBias ? ws.vec(`${prefix}.k_proj.bias`, nKv * D) : 0;
      this.v = l.kEqV ? null : ws.mat(`${prefix}.v_proj.weight`, nKv * D, hidden);
      this.bv = attnBias && !l.kEqV ? ws.vec(`${prefix}.v_proj.bias`, nKv * D) : 0;
      this.kNorm = ws.vec(`${prefix}.k_norm.weight`, D);
    }
    this.rope = layerRope(c, l.type, D);
    this.window = l.type === 'sliding_attention' ? c.window : undefined;
  }

  specs(maxContext: number): RegionSpec[] {
    if (this.source) return [];
    if (maxContext !== this.declaredFor) {
      const W = this.window;
      const capacity = W ? W + this.ctx.maxChunk - 1 : 0;
      const ring = W && capacity < maxContext ? capacity : undefined;
      this.kState = kvCacheRegion(`${this.prefix}.k`, this.l.nKv, this.l.headDim, this.ctx.kvCache, ring);
      this.vState = kvCacheRegion(`${this.prefix}.v`, this.l.nKv, this.l.headDim, this.ctx.kvCache, ring);
      this.pageState = pageBoundsState(this.ctx, this.prefix, this.l.nKv, this.l.headDim, maxContext, W);
      this.declaredFor = maxContext;
    }
    return this.pageState ? [this.kState, this.vState, this.pageState.spec] : [this.kState, this.vState];
  }

  /**
   * `passKeys` [T, nKv·headDim]: where KV-shared layers read this layer's page bounds, the tensor the
   * cache owner writes its keys of the pass into and the sharing layers read them from (null otherwise).
   */
  forward(g: Graph, x: Tensor, out: Tensor, passKeys: Tensor | null): void {
    const { nHeads, eps } = this.c;
    const { headDim: D, nKv } = this.l;
    const q = g.tmp(nHeads * D), ao = g.tmp(nHeads * D);
    linear(g, q, x, this.q, this.bq);
    norm(g, { w: this.qNorm, eps }, q, q, D);
    rope(g, q, nHeads, D, this.rope);
    const owner = this.source ?? this;
    let keys = passKeys;
    if (!this.source) {
      const kd = nKv * D;
      const kk = passKeys ?? g.tmp(kd), v = g.tmp(kd);
      keys = kk;
      linear(g, kk, x, this.k!, this.bk);
      if (this.v) linear(g, v, x, this.v, this.bv);
      else copy(g, v, kk, { chunks: 1, len: kd });
      norm(g, { w: this.kNorm, eps }, kk, kk, D);
      norm(g, { w: 0, eps }, v, v, D);
      rope(g, kk, nKv, D, this.rope);
      kvAppend(g, this.kState, kk);
      kvAppend(g, this.vState, v);
    }
    if (owner.pageState && !keys) throw new Error(`${this.prefix}: a KV-shared layer under sparse top-k attention needs its source layer's keys of the pass`);
    const pages = keys ? attentionPages(this.ctx, owner.pageState, keys) : undefined;
    attention(g, { y: ao, q, k: owner.kState, v: owner.vState, nHeads, nKv, headDim: D, vDim: D, scale: 1, window: this.window, ...(pages ? { pages } : {}) });
    linear(g, out, ao, this.o, this.bo);
  }
}

class Gemma4Block {
  readonly attn: Gemma4Attention;
  readonly mlp: GatedWeights;
  readonly norms: { input: NormSpec; postAttn: NormSpec; preFfn: NormSpec; postFfn: NormSpec };
  readonly moe: { spec: MoeSpec; routerScale: number; post1: NormSpec; post2: NormSpec; pre2: NormSpec } | null;
  readonly ple: { gate: Weight; proj: Weight; norm: NormSpec } | null;
  readonly scalar: number;
  readonly kind: string;

  constructor(readonly ctx: Ctx, readonly i: number, readonly c: Gemma4Config, source: Gemma4Attention | null) {
    const { ws } = ctx;
    const { hidden: H, eps } = c;
    const l = c.layers[i];
    const p = `${c.prefix}layers.${i}`;
    this.kind = l.type === 'full_attention' ? 'attention' : 'sliding_attention';
    this.attn = new Gemma4Attention(ctx, `${p}.self_attn`, c, l, source);
    this.mlp = {
      gate: ws.mat(`${p}.mlp.gate_proj.weight`, l.inter, H),
      up: ws.mat(`${p}.mlp.up_proj.weight`, l.inter, H),
      down: ws.mat(`${p}.mlp.down_proj.weight`, H, l.inter),
    };
    const nv = (s: string, n = H): NormSpec => ({ w: ws.vec(`${p}.${s}.weight`, n), eps });
    this.norms = { input: nv('input_layernorm'), postAttn: nv('post_attention_layernorm'), preFfn: nv('pre_feedforward_layernorm'), postFfn: nv('post_feedforward_layernorm') };
    if (c.moe) {
      const { nExperts: E, topk, inter: I } = c.moe;
      this.moe = {
        spec: {
          name: `${p}.experts`, hidden: H, nExperts: E, topk, inter: I, act: c.act,
          routing: { mode: 'softmax_topk', renormalize: true },
          router: ws.mat(`${p}.router.proj.weight`, E, H),
          expert: expertWeights(ws, p, E, I, H),
          expertScale: ws.vec(`${p}.router.per_expert_scale`, E),
        },
        routerScale: ws.vec(`${p}.router.scale`, H),
        post1: nv('post_feedforward_layernorm_1'), post2: nv('post_feedforward_layernorm_2'), pre2: nv('pre_feedforward_layernorm_2'),
      };
    } else {
      this.moe = null;
    }
    this.ple = c.ple ? {
      gate: ws.mat(`${p}.per_layer_input_gate.weight`, c.ple.dim, H),
      proj: ws.mat(`${p}.per_layer_projection.weight`, H, c.ple.dim),
      norm: nv('post_per_layer_input_norm'),
    } : null;
    this.scalar = ws.has(`${p}.layer_scalar`) ? ctx.f32(ws.vec(`${p}.layer_scalar`, 1), 1)[0] : 1;
  }

  specs(maxContext: number): RegionSpec[] {
    return this.attn.specs(maxContext);
  }

  /**
   * Updates x in place; `ple` holds this layer's per-layer input rows [T, P] (null without them);
   * `passKeys` as Gemma4Attention.forward takes it.
   */
  forward(g: Graph, x: Tensor, ple: Tensor | null, passKeys: Tensor | null): void {
    const { hidden: H, eps, act } = this.c;
    const s = this.norms;
    const h = g.tmp(H), o = g.tmp(H);
    norm(g, s.input, h, x);
    this.attn.forward(g, h, o, passKeys);
    norm(g, s.postAttn, o, o);
    add(g, x, x, o);
    norm(g, s.preFfn, h, x);
    gatedFfn(g, this.mlp, act, h, o);
    if (this.moe) {
      const m = this.moe;
      const r = g.tmp(H), y = g.tmp(H);
      norm(g, m.post1, o, o);
      norm(g, m.pre2, h, x);
      norm(g, { w: 0, eps }, r, x);
      mulRow(g, r, m.routerScale);
      scale(g, r, r, H ** -0.5);
      moe(g, y, h, m.spec, r);
      norm(g, m.post2, y, y);
      add(g, o, o, y);
    }
    norm(g, s.postFfn, o, o);
    add(g, x, x, o);
    if (this.ple && ple) {
      const P = ple.width;
      const gt = g.tmp(P);
      matmul(g, gt, x, this.ple.gate);
      gatedAct(g, gt, gt, ple, act);
      matmul(g, o, gt, this.ple.proj);
      norm(g, this.ple.norm, o, o);
      add(g, x, x, o);
    }
    if (this.scalar !== 1) scale(g, x, x, this.scalar);
  }
}

export class Gemma4Net implements Net {
  readonly vocabSize: number;
  readonly hidden: number;
  readonly layerKinds: string[];
  readonly hiddenOutput = true;
  readonly blocks: Gemma4Block[];
  private readonly embedW: Weight;
  private readonly head: Weight;
  private readonly finalNorm: NormSpec;
  private readonly ple: { table: Weight; proj: Weight; norm: NormSpec } | null;
  private readonly labels: string[];

  constructor(readonly ctx: Ctx, readonly c: Gemma4Config) {
    const { ws } = ctx;
    const { hidden: H, vocab: V, prefix } = c;
    this.vocabSize = V;
    this.hidden = H;
    this.blocks = [];
    for (let i = 0; i < c.nLayers; i++) {
      const src = c.layers[i].kvSource;
      this.blocks.push(new Gemma4Block(ctx, i, c, src === i ? null : this.blocks[src].attn));
    }
    this.layerKinds = this.blocks.map((b) => b.kind);
    this.labels = this.blocks.map((_, i) => `layer ${i}`);
    this.embedW = ws.mat(`${prefix}embed_tokens.weight`, V, H);
    const tied = c.tieEmbeddings || !ws.has('lm_head.weight');
    this.head = tied ? this.embedW : ws.mat('lm_head.weight', V, H);
    this.finalNorm = { w: ws.vec(`${prefix}norm.weight`, H), eps: c.eps };
    const L = c.nLayers;
    this.ple = c.ple ? {
      table: ws.mat(`${prefix}embed_tokens_per_layer.weight`, c.ple.vocab, L * c.ple.dim),
      proj: ws.mat(`${prefix}per_layer_model_projection.weight`, L * c.ple.dim, H),
      norm: { w: ws.vec(`${prefix}per_layer_projection_norm.weight`, c.ple.dim), eps: c.eps },
    } : null;
  }

  specs(maxContext: number): RegionSpec[] {
    return this.blocks.flatMap((b) => b.specs(maxContext));
  }

  forward(g: Graph, all: boolean, output: ForwardOutput = 'logits'): Tensor {
    const { hidden: H, vocab: V, nLayers: L } = this.c;
    const f = Math.fround;
    const x = g.tmp(H);
    // The embedding scale is a float32 buffer in HF (√hidden rounded to f32).
    embed(g, x, this.embedW, f(Math.sqrt(H)));
    let ple: Tensor | null = null;
    if (this.ple) {
      const P = this.c.ple!.dim;
      ple = g.tmp(L * P);
      const proj = g.tmp(L * P);
      embed(g, ple, this.ple.table, f(Math.sqrt(P)));
      matmul(g, proj, x, this.ple.proj);
      scale(g, proj, proj, H ** -0.5);
      norm(g, this.ple.norm, proj, proj, P);
      add(g, ple, proj, ple);
      scale(g, ple, ple, 2 ** -0.5);
    }
    // Keys of the pass of each cache owner whose page bounds KV-shared layers read, allocated outside
    // the layer scopes so that they outlive the owner's layer.
    const passKeys = new Map<number, Tensor>();
    this.c.layers.forEach((l, i) => {
      const src = this.blocks[l.kvSource].attn;
      if (l.kvSource !== i && src.pageState && !passKeys.has(l.kvSource)) passKeys.set(l.kvSource, g.tmp(l.nKv * l.headDim));
    });
    for (let i = 0; i < L; i++) {
      g.scope(this.labels[i], () => {
        let row: Tensor | null = null;
        if (ple) {
          const P = this.c.ple!.dim;
          row = g.tmp(P);
          copy(g, row, ple, { chunks: 1, len: P, xOff: i * P });
        }
        this.blocks[i].forward(g, x, row, passKeys.get(this.c.layers[i].kvSource) ?? null);
      });
    }
    const xs = all ? x : g.last(x);
    norm(g, this.finalNorm, xs, xs);
    if (output === 'hidden') return xs;
    const logits = g.tmp(V, xs.rows);
    matmul(g, logits, xs, this.head);
    if (this.c.finalSoftcap) softcap(g, logits, logits, this.c.finalSoftcap);
    return logits;
  }
}

/** Whether a tensor is a k/v projection or norm of a KV-shared layer (the config's last num_kv_shared_layers). */
function isSharedKvTensor(name: string, config: RawConfig): boolean {
  const m = /layers\.(\d+)\.self_attn\.(k_proj|v_proj|k_norm|v_norm)\./.exec(name);
  if (!m) return false;
  const t = obj(config.text_config ?? config);
  const n = t.num_hidden_layers, shared = t.num_kv_shared_layers;
  return typeof n === 'number' && typeof shared === 'number' && shared > 0 && Number(m[1]) >= n - shared;
}

export const gemma4: Family<Gemma4Config> = {
  types: ['gemma4_text', 'gemma4'],
  // MoE routers stay f32 in quantized loads (routing decisions are sensitive to their precision).
  keepF32: (name) => name.endsWith('.router.proj.weight'),
  // The multimodal checkpoints' vision and audio towers and their embedders.
  // The k/v projections and norms some checkpoints keep for the KV-shared layers (HF ignores them too).
  ignore: (name, config) => /^model\.(vision_tower|audio_tower|embed_vision|embed_audio)\./.test(name) || isSharedKvTensor(name, config),
  parse: parseGemma4,
  build: (ctx, c) => new Gemma4Net(ctx, c),
};
