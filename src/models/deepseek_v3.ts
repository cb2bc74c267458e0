// DeepSeek-V3 (HF DeepseekV3ForCausalLM): pre-norm decoder with Multi-head Latent Attention and a
// DeepSeekMoE feed-forward (sigmoid router with aux-loss-free bias and group-limited selection,
// routed_scaling_factor, shared experts), the first `first_k_dense_replace` layers dense.
//
// MLA (arXiv 2405.04434 §2.1), per token x and head h:
//   q_h = [q_nope_h | q_rope_h] = W_UQ · RMSNorm(W_DQ x)      (q_a_proj → q_a_layernorm → q_b_proj; or q_proj)
//   [c | k_rope] = W_DKV x;  c ← RMSNorm(c)                    (kv_a_proj_with_mqa, kv_a_layernorm)
//   k_nope_h = W_UK_h c,  v_h = W_UV_h c                       (kv_b_proj rows per head: [k_nope | v])
//   o_h = Σ_s softmax_s(scale · (q_nope_h·k_nope_h,s + q_rope_h·k_rope_s)) v_h,s
// The cache holds only the latent [c | RoPE(k_rope)] per token (kv_lora_rank + qk_rope_head_dim floats
// per layer, shared by every head; with kvCache q8_0 / q4_0, one quantized head of that width). W_UK is absorbed into the query (q_nope_h·W_UK_h c = (W_UK_hᵀ q_nope_h)·c)
// and W_UV into the output (Σ_s p_s W_UV_h c_s = W_UV_h Σ_s p_s c_s), so attention runs as MQA with one
// latent kv head: keys [c | k_rope], values c, queries [W_UK_hᵀ q_nope_h | q_rope_h].

import type { RouteOptions } from '../kernels/moe';
import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { copy, kvAppend, linear, matmul, norm, type RopeSpec } from '../graph/ops';
import { headMatmul, latentAttention, normPrefix, ropeSlice } from '../graph/ops-mla';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation, type GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { ConfigError } from '../formats/errors';
import { bool, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertWeights, keepKvbF32 } from './shared';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';

/** HF DeepseekV3RMSNorm(q_lora_rank) / (kv_lora_rank) are built without eps: the class default 1e-6. */
export const LORA_NORM_EPS = 1e-6;

export interface MlaConfig {
  hidden: number;
  nHeads: number;
  /** q_lora_rank, or 0 for a plain q_proj. */
  qLora: number;
  /** kv_lora_rank */
  kvLora: number;
  /** qk_nope_head_dim, qk_rope_head_dim, v_head_dim */
  dNope: number;
  dRope: number;
  dV: number;
  /** attention_bias: on q_a_proj, kv_a_proj_with_mqa and o_proj. */
  bias: boolean;
  rope: RopeSpec;
  scale: number;
}

/** MLA with the compressed latent cache (see the file header). */
export class MlaAttention implements Mixer {
  readonly qa: Weight | null;
  readonly qaBias: number;
  readonly qaNorm: number;
  /** q_b_proj (or q_proj): rows per head [q_nope | q_rope]. */
  readonly qb: Weight;
  readonly kva: Weight;
  readonly kvaBias: number;
  readonly kvaNorm: number;
  /** W_UK_hᵀ of every head, [nHeads·kv_lora_rank, qk_nope_head_dim] (f32, transposed from kv_b_proj at load). */
  readonly ukT: Weight;
  /** kv_b_proj (f32): rows per head [W_UK_h (qk_nope_head_dim) | W_UV_h (v_head_dim)], kv_lora_rank columns. */
  readonly kvb: Weight;
  readonly o: Weight;
  readonly oBias: number;
  /** Latent cache row: [c (kv_lora_rank) | k_rope (qk_rope_head_dim)]. */
  readonly latentDim: number;
  /** Session state: the compressed latent cache (kv_lora_rank + the rotary key part per position). */
  readonly latentState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: MlaConfig) {
    const { ws } = ctx;
    const { hidden, nHeads: H, qLora, kvLora: R, dNope, dRope, dV } = cfg;
    const dQk = dNope + dRope;
    this.latentDim = R + dRope;
    this.latentState = kvCacheRegion(`${prefix}.latent`, 1, this.latentDim, ctx.kvCache);
    if (qLora) {
      this.qa = ws.mat(`${prefix}.q_a_proj.weight`, qLora, hidden);
      this.qaBias = cfg.bias ? ws.vec(`${prefix}.q_a_proj.bias`, qLora) : 0;
      this.qaNorm = ws.vec(`${prefix}.q_a_layernorm.weight`, qLora);
      this.qb = ws.mat(`${prefix}.q_b_proj.weight`, H * dQk, qLora);
    } else {
      this.qa = null;
      this.qaBias = 0;
      this.qaNorm = 0;
      this.qb = ws.mat(`${prefix}.q_proj.weight`, H * dQk, hidden);
    }
    this.kva = ws.mat(`${prefix}.kv_a_proj_with_mqa.weight`, R + dRope, hidden);
    this.kvaBias = cfg.bias ? ws.vec(`${prefix}.kv_a_proj_with_mqa.bias`, R + dRope) : 0;
    this.kvaNorm = ws.vec(`${prefix}.kv_a_layernorm.weight`, R);
    const kvbName = `${prefix}.kv_b_proj.weight`;
    const kvb = ws.mat(kvbName, H * (dNope + dV), R);
    if (kvb.dtype !== 'f32') throw new ConfigError(`tensors["${kvbName}"]`, `must be held as f32 to absorb it into the query, holds ${kvb.dtype}`);
    this.kvb = kvb;
    const src = ctx.f32(kvb.ptr, kvb.rows * R);
    const t = new Float32Array(H * R * dNope);
    for (let h = 0; h < H; h++) {
      const row0 = h * (dNope + dV);
      for (let i = 0; i < dNope; i++) {
        const s = (row0 + i) * R;
        for (let r = 0; r < R; r++) t[(h * R + r) * dNope + i] = src[s + r];
      }
    }
    this.ukT = { name: `${kvbName} (W_UK^T)`, ptr: ctx.k.arena.putF32(t).ptr, dtype: 'f32', rows: H * R, cols: dNope };
    this.o = ws.mat(`${prefix}.o_proj.weight`, hidden, H * dV);
    this.oBias = cfg.bias ? ws.vec(`${prefix}.o_proj.bias`, hidden) : 0;
  }

  specs(_maxContext: number): RegionSpec[] {
    return [this.latentState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { cfg } = this;
    const { nHeads: H, qLora, kvLora: R, dNope, dRope, dV } = cfg;
    const dQk = dNope + dRope, L = this.latentDim;

    const q = g.tmp(H * dQk);
    let qa: Tensor | null = null;
    if (this.qa) {
      qa = g.tmp(qLora);
      linear(g, qa, x, this.qa, this.qaBias);
      norm(g, { w: this.qaNorm, eps: LORA_NORM_EPS }, qa, qa);
      matmul(g, q, qa, this.qb);
    } else {
      matmul(g, q, x, this.qb);
    }
    ropeSlice(g, q, { heads: H, off: dNope, stride: dQk }, cfg.rope);

    // The latent row [RMSNorm(c) | RoPE(k_rope)], cached at the pass's positions.
    const lat = g.tmp(L);
    linear(g, lat, x, this.kva, this.kvaBias);
    normPrefix(g, lat, R, { w: this.kvaNorm, eps: LORA_NORM_EPS });
    ropeSlice(g, lat, { heads: 1, off: R, stride: dRope }, cfg.rope);
    kvAppend(g, this.latentState, lat);

    // Absorbed queries qlat[h] = [W_UK_hᵀ q_nope_h | q_rope_h].
    const qlat = g.tmp(H * L);
    headMatmul(g, { y: qlat, x: q, w: this.ukT, heads: H, rows: R, cols: dNope, wOff: 0, wHeadStride: R * dNope, xStride: dQk, yStride: L });
    copy(g, qlat, q, { chunks: H, len: dRope, xOff: dNope, xStride: dQk, yOff: R, yStride: L });

    const olat = g.tmp(H * R);
    this.attend(g, x, qa, qlat, olat);

    // o_h = W_UV_h olat_h (the rows of kv_b_proj after each head's W_UK_h), then o_proj.
    const ao = g.tmp(H * dV);
    headMatmul(g, { y: ao, x: olat, w: this.kvb, heads: H, rows: dV, cols: R, wOff: dNope * R, wHeadStride: (dNope + dV) * R, xStride: R, yStride: dV });
    linear(g, out, ao, this.o, this.oBias);
  }

  /**
   * olat[rows, nHeads·kv_lora_rank] = attention of the absorbed queries over the latent cache. Dense
   * causal here; DeepSeek-V3.2 restricts it to its indexer's picks. `x` is the layer input and `qa`
   * the normalised query latent (DSA's indexer reads both).
   */
  protected attend(g: Graph, _x: Tensor, _qa: Tensor | null, qlat: Tensor, olat: Tensor): void {
    const { cfg } = this;
    latentAttention(g, { y: olat, q: qlat, cache: this.latentState, nHeads: cfg.nHeads, dim: this.latentDim, vDim: cfg.kvLora, scale: cfg.scale });
  }
}

/** MLA settings as read from a config: MlaConfig with the RoPE as parameters (tables come at build). */
export interface MlaParams extends Omit<MlaConfig, 'rope'> {
  rope: RopeParams;
  /** Pairing of the rotated dims: adjacent pairs ('interleaved') or halves ('neox'). */
  ropeStyle: 'neox' | 'interleaved';
}

/** DeepseekV3MoE: routed experts (DeepseekV3TopkRouter) and n_shared_experts as one MLP. */
export interface DeepseekMoeConfig {
  /** n_routed_experts */
  nExperts: number;
  topk: number;
  /** moe_intermediate_size, of each routed expert (and of each shared one) */
  inter: number;
  /** n_shared_experts (0: none) */
  nShared: number;
  nGroup: number;
  topkGroup: number;
  /** norm_topk_prob */
  renormalize: boolean;
  /** routed_scaling_factor */
  routedScaling: number;
}

/** The config of a DeepSeek-V3 decoder (also DeepSeek-V3.2's, which adds its indexer settings). */
export interface DeepseekConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  /** Biases on the MLPs and shared experts (DeepSeek-V3.2 mlp_bias). */
  mlpBias: boolean;
  mla: MlaParams;
  /** Whether each layer's feed-forward is the MoE (else a dense MLP of denseInter). */
  sparse: boolean[];
  /** null when no layer is sparse. */
  moe: DeepseekMoeConfig | null;
  /** intermediate_size of the dense layers; null when every layer is sparse. */
  denseInter: number | null;
  tieEmbeddings: boolean;
}

/** DeepSeek-V3 MLA settings of a config. */
function mlaParams(c: RawConfig, ropeStyle: 'neox' | 'interleaved'): MlaParams {
  const hidden = int(c, 'hidden_size');
  const nHeads = int(c, 'num_attention_heads');
  const qLora = c.q_lora_rank === null ? 0 : int(c, 'q_lora_rank', 1536);
  const kvLora = int(c, 'kv_lora_rank', 512);
  const dNope = int(c, 'qk_nope_head_dim', 128);
  const dRope = int(c, 'qk_rope_head_dim', 64);
  const dV = int(c, 'v_head_dim', 128);
  rejectIf(kvLora < 1, 'kv_lora_rank', 'must be ≥ 1');
  rejectIf(dRope < 2 || dRope % 2 !== 0, 'qk_rope_head_dim', `must be an even number ≥ 2, got ${dRope}`);
  rejectIf(dV < 1, 'v_head_dim', 'must be ≥ 1');
  // The latent is shared by all heads; num_key_value_heads only sizes HF's repeat_kv of the
  // up-projected per-head keys, which is the identity (kv_b_proj yields num_attention_heads heads).
  const nKv = int(c, 'num_key_value_heads', nHeads);
  rejectIf(nKv !== nHeads, 'num_key_value_heads', `${nKv} != num_attention_heads ${nHeads}: kv_b_proj yields one key/value per query head`);
  rejectIf((c.pretraining_tp ?? 1) !== 1, 'pretraining_tp', 'only 1 is supported');
  // HF DeepseekV3Attention.scaling: qk_head_dim^-0.5, times mscale² when the RoPE is scaled and
  // mscale_all_dim is set (yarn_get_mscale(factor, mscale_all_dim) = 0.1·m·ln(factor) + 1 for factor > 1).
  let scale = 1 / Math.sqrt(dNope + dRope);
  const rope = ropeParams(c);
  const { scaling } = rope;
  const ropeType = scaling?.rope_type ?? scaling?.type ?? 'default';
  if (scaling && ropeType !== 'default') {
    const msAll = scaling.mscale_all_dim ?? 0;
    if (msAll) {
      const factor = num(scaling, 'factor');
      const m = factor <= 1 ? 1 : 0.1 * msAll * Math.log(factor) + 1;
      scale *= m * m;
    }
  }
  return { hidden, nHeads, qLora, kvLora, dNope, dRope, dV, bias: bool(c, 'attention_bias', false), rope, ropeStyle, scale };
}

/** The MLA layer settings with their RoPE tables: RoPE acts on the qk_rope_head_dim slice only. */
function mlaConfig(p: MlaParams): MlaConfig {
  const { ropeStyle, rope, ...rest } = p;
  return { ...rest, rope: ropeSpec(rope, p.dRope, p.dRope, ropeStyle) };
}

/** Whether each layer's feed-forward is the MoE block: `mlp_layer_types` when given, else first_k_dense_replace. */
export function sparseLayers(c: RawConfig, nLayers: number): boolean[] {
  const mt = c.mlp_layer_types;
  if (Array.isArray(mt)) {
    rejectIf(mt.length !== nLayers, 'mlp_layer_types', `has ${mt.length} entries for ${nLayers} layers`);
    mt.forEach((t, i) => rejectIf(t !== 'dense' && t !== 'sparse', `mlp_layer_types[${i}]`, `${JSON.stringify(t)} is not dense or sparse`));
    return mt.map((t) => t === 'sparse');
  }
  const k = int(c, 'first_k_dense_replace', 3);
  return Array.from({ length: nLayers }, (_, i) => i >= k);
}

/** The routed and shared experts of a config's MoE layers. */
function deepseekMoeConfig(c: RawConfig): DeepseekMoeConfig {
  const E = int(c, 'n_routed_experts', 256);
  const topk = int(c, 'num_experts_per_tok', 8);
  const inter = int(c, 'moe_intermediate_size', 2048);
  const nShared = c.n_shared_experts === null ? 0 : int(c, 'n_shared_experts', 1);
  const nGroup = int(c, 'n_group', 1);
  const topkGroup = int(c, 'topk_group', nGroup);
  rejectIf(topk < 1 || topk > E, 'num_experts_per_tok', `${topk} must be in [1, ${E}]`);
  rejectIf(nGroup < 1 || E % nGroup !== 0, 'n_group', `${nGroup} must divide n_routed_experts ${E}`);
  rejectIf(nGroup > 1 && E / nGroup < 2, 'n_group', `groups of ${E / nGroup} expert: the group score sums each group's best two`);
  rejectIf(topkGroup < 1 || topkGroup > nGroup, 'topk_group', `${topkGroup} must be in [1, n_group ${nGroup}]`);
  rejectIf(topkGroup * (E / nGroup) < topk, 'topk_group', `${topkGroup} groups of ${E / nGroup} experts hold fewer than num_experts_per_tok ${topk}`);
  return {
    nExperts: E, topk, inter, nShared, nGroup, topkGroup,
    renormalize: bool(c, 'norm_topk_prob', true),
    routedScaling: num(c, 'routed_scaling_factor', 2.5),
  };
}

/** The DeepSeek decoder fields of a config; `ropeStyle` and `mlpBias` are the variant's. */
export function parseDeepseek(c: RawConfig, ropeStyle: 'neox' | 'interleaved', mlpBias: boolean): DeepseekConfig {
  const mla = mlaParams(c, ropeStyle);
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const act = parseActivation(c.hidden_act ?? 'silu');
  const sparse = sparseLayers(c, nLayers);
  return {
    hidden, nLayers, vocab, eps, act, mlpBias, mla, sparse,
    moe: sparse.some((s) => s) ? deepseekMoeConfig(c) : null,
    denseInter: sparse.every((s) => s) ? null : int(c, 'intermediate_size'),
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/** DeepseekV3MoE: sigmoid-routed experts (DeepseekV3TopkRouter) plus n_shared_experts as one MLP. */
export function deepseekMoe(ctx: Ctx, m: DeepseekMoeConfig, hidden: number, p: string, act: Activation, mlpBias: boolean): Ffn {
  const { ws } = ctx;
  const { nExperts: E, topk, inter, nShared, nGroup, topkGroup } = m;
  const mp = `${p}.mlp`;
  const routing: RouteOptions = {
    mode: 'sigmoid', renormalize: m.renormalize, bias: ws.optVec(`${mp}.gate.e_score_correction_bias`, E) || undefined,
    nGroup, topkGroup, routedScaling: m.routedScaling,
  };
  let shared: { w: GatedWeights; inter: number } | undefined;
  if (nShared > 0) {
    const si = inter * nShared, sp = `${mp}.shared_experts`;
    shared = {
      inter: si,
      w: {
        gate: ws.mat(`${sp}.gate_proj.weight`, si, hidden),
        up: ws.mat(`${sp}.up_proj.weight`, si, hidden),
        down: ws.mat(`${sp}.down_proj.weight`, hidden, si),
        gateBias: mlpBias ? ws.vec(`${sp}.gate_proj.bias`, si) : 0,
        upBias: mlpBias ? ws.vec(`${sp}.up_proj.bias`, si) : 0,
        downBias: mlpBias ? ws.vec(`${sp}.down_proj.bias`, hidden) : 0,
      },
    };
  }
  return new Moe(ctx, {
    hidden, nExperts: E, topk, inter, act, routing,
    router: ws.mat(`${mp}.gate.weight`, E, hidden),
    expert: expertWeights(ws, mp, E, inter, hidden),
    shared,
  });
}

/** The DeepSeek decoder around a family's attention mixer (made from its prefix and the MLA settings). */
export function buildDeepseek(ctx: Ctx, c: DeepseekConfig, kind: string, mixer: (prefix: string, mla: MlaConfig) => Mixer): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, act, mlpBias } = c;
  const mla = mlaConfig(c.mla);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    blocks.push(new PreNormBlock(ctx, {
      kind, hidden, mixer: mixer(`${p}.self_attn`, mla),
      ffn: c.sparse[i] && c.moe ? deepseekMoe(ctx, c.moe, hidden, p, act, mlpBias) : new GatedMlp(ctx, `${p}.mlp`, hidden, c.denseInter!, act, mlpBias),
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

export const deepseekV3: Family<DeepseekConfig> = {
  types: ['deepseek_v3'],
  keepF32: keepKvbF32,
  // rope_interleave (default True): HF de-interleaves q_rope/k_rope before a rotate-half RoPE, which
  // gives the same q·k as rotating adjacent pairs in place.
  // HF ignores the remote-code moe_layer_freq (every layer from first_k_dense_replace on is MoE).
  parse: (c) => parseDeepseek(c, bool(c, 'rope_interleave', true) ? 'interleaved' : 'neox', false),
  build: (ctx, c) => buildDeepseek(ctx, c, 'mla_attention', (p, mla) => new MlaAttention(ctx, p, mla)),
};
