// MiMo-V2-Flash (MiMoV2FlashForCausalLM): a pre-norm decoder mixing two attention kinds by
// `layer_types`:
//   full_attention:    num_key_value_heads KV heads, causal over the whole context, no sinks;
//   sliding_attention: 2 · num_key_value_heads KV heads, a window of `sliding_window` positions
//                      (a query at p sees keys > p − W), and a learned sink logit per query head
//                      joining the softmax denominator.
// Queries and keys have head_dim, values v_head_dim; values are multiplied by
// attention_value_scale before they are cached. Each layer kind has its own RoPE
// (`rope_parameters[<layer type>]`): θ and a partial rotary factor (default 0.334), rotating the
// first int(head_dim · factor) dims (neox pairs). The feed-forward is per `mlp_layer_types`: a
// dense SwiGLU MLP (intermediate_size), or a DeepSeek-V3-style MoE without shared experts: sigmoid
// router scores, selection on score + e_score_correction_bias within the topk_group best of
// n_group groups, weights the scores of the picks (normalised when norm_topk_prob) ×
// routed_scaling_factor; experts per expert (experts.N.gate_proj / up_proj / down_proj, as
// released) or fused (experts.gate_up_proj [E, 2I, D], experts.down_proj [E, D, I]).

import type { RouteOptions } from '../kernels/moe';
import type { Ctx, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import type { Graph, Tensor } from '../graph/graph';
import type { Weight } from '../kernels/types';
import { attention, kvAppend, linear, rope, scale, type RopeSpec } from '../graph/ops';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import { bool, int, layerTypes, lmHead, num, obj, rejectIf, ropeSpec, tiedEmbeddings, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertWeights } from './shared';

export type MiMoLayerType = 'full_attention' | 'sliding_attention';

export interface MiMoRope {
  params: RopeParams;
  /** int(head_dim · partial_rotary_factor) */
  rotaryDim: number;
}

export interface MiMoV2FlashConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  nHeads: number;
  /** KV heads of the full-attention layers (sliding layers have twice as many). */
  nKv: number;
  headDim: number;
  vHeadDim: number;
  /** attention_bias: q/k/v biases (o_proj has none). */
  qkvBias: boolean;
  layerTypes: MiMoLayerType[];
  /** mlp_layer_types: true where the feed-forward is the MoE. */
  sparse: boolean[];
  window: number;
  rope: Record<MiMoLayerType, MiMoRope>;
  /** attention_value_scale (null: 1) */
  valueScale: number;
  eps: number;
  act: Activation;
  /** intermediate_size of the dense MLP layers */
  inter: number;
  moe: {
    nExperts: number;
    topk: number;
    inter: number;
    nGroup: number;
    topkGroup: number;
    renormalize: boolean;
    routedScaling: number;
  };
  tieEmbeddings: boolean;
}

const DEFAULT_ROPE: Record<MiMoLayerType, RawConfig> = {
  full_attention: { rope_type: 'default', rope_theta: 5_000_000, partial_rotary_factor: 0.334 },
  sliding_attention: { rope_type: 'default', rope_theta: 10_000, partial_rotary_factor: 0.334 },
};

function parseRope(c: RawConfig, t: MiMoLayerType, headDim: number): MiMoRope {
  const all = c.rope_parameters == null ? DEFAULT_ROPE : obj(c.rope_parameters);
  const field = `rope_parameters.${t}`;
  rejectIf(all[t] == null || typeof all[t] !== 'object', field, 'is required for a layer of that type');
  const rp = obj(all[t]);
  const type = rp.rope_type ?? rp.type ?? 'default';
  // MiMo's own default RoPE reads the partial factor from the layer type's entry; the scaled
  // variants of transformers' shared RoPE functions would read it elsewhere.
  rejectIf(type !== 'default', `${field}.rope_type`, `${JSON.stringify(type)} is not supported (default only)`);
  const theta = num(rp, 'rope_theta');
  const factor = num(rp, 'partial_rotary_factor', 0.334);
  const rotaryDim = Math.floor(headDim * factor);
  rejectIf(rotaryDim < 2 || rotaryDim % 2 !== 0, `${field}.partial_rotary_factor`,
    `int(head_dim ${headDim} × ${factor}) = ${rotaryDim} rotary dims; an even count ≥ 2 is supported`);
  return { params: { theta, scaling: null, maxPositions: typeof c.max_position_embeddings === 'number' ? c.max_position_embeddings : undefined }, rotaryDim };
}

export function parseMiMoV2Flash(c: RawConfig): MiMoV2FlashConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers', 48);
  const nHeads = int(c, 'num_attention_heads', 64);
  const nKv = int(c, 'num_key_value_heads', 4);
  const headDim = int(c, 'head_dim', 192);
  const vHeadDim = int(c, 'v_head_dim', 128);
  const types = layerTypes<MiMoLayerType>(c, nLayers, ['full_attention', 'sliding_attention'],
    (i) => (i === 0 || (i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention'));
  rejectIf(nKv < 1 || nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
  rejectIf(types.includes('sliding_attention') && nHeads % (2 * nKv) !== 0, 'num_key_value_heads',
    `sliding layers have 2 × ${nKv} KV heads, which must divide num_attention_heads ${nHeads}`);
  const mlpTypes = c.mlp_layer_types ?? ['dense', ...Array(Math.max(0, nLayers - 1)).fill('sparse')];
  rejectIf(!Array.isArray(mlpTypes) || mlpTypes.length !== nLayers, 'mlp_layer_types', `must list ${nLayers} entries`);
  (mlpTypes as unknown[]).forEach((t, i) => rejectIf(t !== 'dense' && t !== 'sparse', `mlp_layer_types[${i}]`, `${JSON.stringify(t)} is not dense or sparse`));
  const sparse = (mlpTypes as string[]).map((t) => t === 'sparse');
  const window = int(c, 'sliding_window', 128);
  rejectIf(types.includes('sliding_attention') && window < 1, 'sliding_window', 'must be ≥ 1 when layers slide');
  const nExperts = c.n_routed_experts !== undefined ? int(c, 'n_routed_experts') : int(c, 'num_local_experts', 256);
  const topk = int(c, 'num_experts_per_tok', 8);
  const nGroup = int(c, 'n_group', 1), topkGroup = int(c, 'topk_group', 1);
  if (sparse.some((s) => s)) {
    rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
    rejectIf(nGroup < 1 || nExperts % nGroup !== 0, 'n_group', `${nGroup} must divide n_routed_experts ${nExperts}`);
    rejectIf(topkGroup < 1 || topkGroup > nGroup || topkGroup * (nExperts / nGroup) < topk, 'topk_group',
      `${topkGroup} groups of ${nExperts / nGroup} experts must hold num_experts_per_tok ${topk}`);
  }
  return {
    hidden, nLayers, vocab: int(c, 'vocab_size'), nHeads, nKv, headDim, vHeadDim,
    qkvBias: bool(c, 'attention_bias', false),
    layerTypes: types, sparse, window,
    rope: { full_attention: parseRope(c, 'full_attention', headDim), sliding_attention: parseRope(c, 'sliding_attention', headDim) },
    valueScale: c.attention_value_scale === null ? 1 : num(c, 'attention_value_scale', 0.707),
    eps: num(c, 'rms_norm_eps', 1e-5),
    act: parseActivation(c.hidden_act ?? 'silu'),
    inter: sparse.every((s) => s) ? 0 : int(c, 'intermediate_size', 16384),
    moe: {
      nExperts, topk, inter: sparse.some((s) => s) ? int(c, 'moe_intermediate_size', 2048) : 0, nGroup, topkGroup,
      renormalize: bool(c, 'norm_topk_prob', true),
      routedScaling: c.routed_scaling_factor === null ? 1 : num(c, 'routed_scaling_factor', 1),
    },
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export interface MiMoAttentionConfig {
  hidden: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  vHeadDim: number;
  qkvBias: boolean;
  rope: RopeSpec;
  /** Sliding window (0: full attention); sliding layers also have sinks. */
  window: number;
  valueScale: number;
}

/**
 * MiMo attention: q/k/v (optional biases), o without bias, RoPE on the leading dims, values scaled
 * before the cache, and on sliding layers a window and per-head sink logits, stored as
 * `self_attn.attention_sink_bias` in the released checkpoints (`self_attn.sinks` in transformers).
 */
export class MiMoAttention implements Mixer {
  readonly q: Weight;
  readonly k: Weight;
  readonly v: Weight;
  readonly o: Weight;
  readonly bq: number;
  readonly bk: number;
  readonly bv: number;
  readonly sinks: number;
  kState!: RegionSpec;
  vState!: RegionSpec;
  private declaredFor = -1;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: MiMoAttentionConfig) {
    const { ws } = ctx;
    const { hidden, nHeads: H, nKv, headDim: d, vHeadDim: dv, qkvBias } = cfg;
    this.q = ws.mat(`${prefix}.q_proj.weight`, H * d, hidden);
    this.k = ws.mat(`${prefix}.k_proj.weight`, nKv * d, hidden);
    this.v = ws.mat(`${prefix}.v_proj.weight`, nKv * dv, hidden);
    this.o = ws.mat(`${prefix}.o_proj.weight`, hidden, H * dv);
    this.bq = qkvBias ? ws.vec(`${prefix}.q_proj.bias`, H * d) : 0;
    this.bk = qkvBias ? ws.vec(`${prefix}.k_proj.bias`, nKv * d) : 0;
    this.bv = qkvBias ? ws.vec(`${prefix}.v_proj.bias`, nKv * dv) : 0;
    const sinkName = ws.has(`${prefix}.attention_sink_bias`) ? `${prefix}.attention_sink_bias` : `${prefix}.sinks`;
    this.sinks = cfg.window ? ws.vec(sinkName, H) : 0;
  }

  specs(maxContext: number): RegionSpec[] {
    if (maxContext !== this.declaredFor) {
      const { nKv, headDim, vHeadDim, window } = this.cfg;
      const capacity = window + this.ctx.maxChunk - 1;
      const ring = window > 0 && capacity < maxContext ? capacity : undefined;
      this.kState = kvCacheRegion(`${this.prefix}.k`, nKv, headDim, this.ctx.kvCache, ring);
      this.vState = kvCacheRegion(`${this.prefix}.v`, nKv, vHeadDim, this.ctx.kvCache, ring);
      this.declaredFor = maxContext;
    }
    return [this.kState, this.vState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { nHeads: H, nKv, headDim: d, vHeadDim: dv, rope: r, window, valueScale } = this.cfg;
    const q = g.tmp(H * d), k = g.tmp(nKv * d), v = g.tmp(nKv * dv), ao = g.tmp(H * dv);
    linear(g, q, x, this.q, this.bq);
    linear(g, k, x, this.k, this.bk);
    linear(g, v, x, this.v, this.bv);
    if (valueScale !== 1) scale(g, v, v, valueScale);
    rope(g, q, H, d, r);
    rope(g, k, nKv, d, r);
    kvAppend(g, this.kState, k);
    kvAppend(g, this.vState, v);
    attention(g, {
      y: ao, q, k: this.kState, v: this.vState, nHeads: H, nKv, headDim: d, vDim: dv, scale: 1 / Math.sqrt(d),
      window: window || undefined, sinks: this.sinks || undefined,
    });
    linear(g, out, ao, this.o);
  }
}

export function buildMiMoV2Flash(ctx: Ctx, c: MiMoV2FlashConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, nHeads, headDim, eps, act } = c;
  const ropes = {
    full_attention: ropeSpec(c.rope.full_attention.params, headDim, c.rope.full_attention.rotaryDim),
    sliding_attention: ropeSpec(c.rope.sliding_attention.params, headDim, c.rope.sliding_attention.rotaryDim),
  };
  const m = c.moe;
  const routing: RouteOptions = {
    mode: 'sigmoid', renormalize: m.renormalize, nGroup: m.nGroup, topkGroup: m.topkGroup,
    routedScaling: m.routedScaling, maskFill: -Infinity,
  };
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`, mp = `${p}.mlp`;
    const sliding = c.layerTypes[i] === 'sliding_attention';
    const attn = new MiMoAttention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv: sliding ? 2 * c.nKv : c.nKv, headDim, vHeadDim: c.vHeadDim, qkvBias: c.qkvBias,
      rope: ropes[c.layerTypes[i]], window: sliding ? c.window : 0, valueScale: c.valueScale,
    });
    const ffn = c.sparse[i]
      ? new Moe(ctx, {
        hidden, nExperts: m.nExperts, topk: m.topk, inter: m.inter, act,
        routing: { ...routing, bias: ws.optVec(`${mp}.gate.e_score_correction_bias`, m.nExperts) || undefined },
        router: ws.mat(`${mp}.gate.weight`, m.nExperts, hidden),
        expert: expertWeights(ws, mp, m.nExperts, m.inter, hidden),
      })
      : new GatedMlp(ctx, mp, hidden, c.inter, act);
    blocks.push(new PreNormBlock(ctx, {
      kind: sliding ? 'sliding_attention' : 'attention', hidden,
      mixer: attn, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export const miMoV2Flash: Family<MiMoV2FlashConfig> = {
  types: ['mimo_v2_flash'],
  keepF32: (name) => name.endsWith('.sinks') || name.endsWith('.attention_sink_bias') || name.endsWith('e_score_correction_bias'),
  // Multi-token-prediction layers of the original checkpoints are not part of the causal LM.
  ignore: (name) => name.startsWith('model.mtp.'),
  parse: parseMiMoV2Flash,
  build: buildMiMoV2Flash,
};
