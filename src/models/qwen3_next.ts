// Qwen3-Next (Qwen3NextForCausalLM): a hybrid decoder of Gated DeltaNet layers and gated softmax
// attention layers (`layer_types`, every full_attention_interval-th layer full), each followed by a
// sparse MoE with a sigmoid-gated shared expert (or a dense MLP on mlp_only_layers /
// decoder_sparse_step / num_experts 0). Every RMSNorm except the gated one is zero-centred: x̂·(1+w).
//
// Gated DeltaNet (HF Qwen3NextGatedDeltaNet), per value head h of Hv, key head h / (Hv/Hk):
//   [q k v z] = in_proj_qkvz x,  [b a] = in_proj_ba x
//   [q k v] = SiLU(causal_conv1d_K([q; k; v]))            (depthwise, no bias)
//   q, k = l2norm(q), l2norm(k) (eps 1e-6);  q ← q · dk^−½
//   β = sigmoid(b),  g = −exp(A_log) · softplus(a + dt_bias)
//   S ← exp(g) S;  S ← S + k (β (v − Sᵀk))ᵀ;  o = Sᵀ q        (S [dk, dv] per head, f32)
//   out = out_proj( RMSNorm(o)·w ⊙ SiLU(z) )                (norm per head over dv, then gate)

import { rowBytes, type Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { causalConv, matmul } from '../graph/ops';
import { deltaGates, gatedDeltaRule, gatedRmsNorm } from '../graph/ops-delta';
import { Attention } from '../layers/attention';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, rowsOf, type Activation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, bool, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertWeights, qwenSparseLayers } from './shared';
import type { RegionSpec } from '../runtime/state';

export interface GatedDeltaNetConfig {
  hidden: number;
  /** linear_num_key_heads, linear_num_value_heads */
  Hk: number;
  Hv: number;
  /** linear_key_head_dim, linear_value_head_dim */
  dk: number;
  dv: number;
  /** linear_conv_kernel_dim */
  convK: number;
  /** rms_norm_eps of the gated output norm */
  eps: number;
}

/**
 * Reorders the rows of a weight in place: new row i is old row order[i]. Used once at load to turn
 * HF's per-key-head interleaved projections into contiguous blocks (quantized rows move whole).
 */
export function permuteRows(ctx: Ctx, w: Weight, order: Int32Array): void {
  const rb = rowBytes(w.dtype, w.cols);
  const mem = ctx.k.arena.u8(w.ptr, w.rows * rb);
  const old = mem.slice();
  for (let i = 0; i < order.length; i++) mem.set(old.subarray(order[i] * rb, (order[i] + 1) * rb), i * rb);
}

/**
 * The part of a Gated DeltaNet mixer that does not depend on how a checkpoint holds the input
 * projections: conv taps, A_log, dt_bias, the gated output norm, the output projection, the session
 * state, and the forward pass from the packed rows [q | k | v], z and [b | a] on. A subclass loads its
 * projections and writes those rows in `project`.
 */
export abstract class GatedDeltaCore implements Mixer {
  readonly convDim: number;
  readonly convW: number;
  /** Arena vectors of Hv floats (A_log, dt_bias) and dv floats (the gated norm's weight). */
  readonly aLog: number;
  readonly dtBias: number;
  readonly normW: number;
  readonly out: Weight;
  /** Session state: the conv window of q, k, v. */
  readonly convState: RegionSpec;
  /** Session state: the gated delta rule state [Hv, dk, dv]. */
  readonly deltaState: RegionSpec;

  /**
   * `names` gives the gated norm's and the output projection's module names (default norm, out_proj);
   * `convW` the arena pointer of the conv taps when they are not `${prefix}.conv1d.weight`.
   */
  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: GatedDeltaNetConfig, names: { norm: string; out: string } = { norm: 'norm', out: 'out_proj' }, convW?: number) {
    const { ws } = ctx;
    const { hidden, Hv, dk, dv, convK } = cfg;
    this.convDim = gatedDeltaConvDim(cfg);
    this.convW = convW ?? ws.vec(`${prefix}.conv1d.weight`, this.convDim * convK);
    this.aLog = ws.vec(`${prefix}.A_log`, Hv);
    this.dtBias = ws.vec(`${prefix}.dt_bias`, Hv);
    this.normW = ws.vec(`${prefix}.${names.norm}.weight`, dv);
    this.out = ws.mat(`${prefix}.${names.out}.weight`, hidden, Hv * dv);
    this.convState = { name: `${prefix}.conv`, kind: 'fixed', floats: this.convDim * (convK - 1) };
    this.deltaState = { name: `${prefix}.S`, kind: 'fixed', floats: Hv * dk * dv };
  }

  specs(): RegionSpec[] {
    return [this.convState, this.deltaState];
  }

  /** Writes the rows [q | k | v] into `mixed`, z into `z` and [b | a] into `ba`. */
  protected abstract project(g: Graph, x: Tensor, mixed: Tensor, z: Tensor, ba: Tensor): void;

  /** Computes the decay `gate` and `beta` from [b | a]. */
  protected gates(g: Graph, gate: Tensor, beta: Tensor, ba: Tensor): void {
    deltaGates(g, gate, beta, ba, { aLog: this.aLog, dtBias: this.dtBias });
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { cfg, convDim } = this;
    const { Hk, Hv, dk, dv, convK } = cfg;
    const mixed = g.tmp(convDim), z = g.tmp(Hv * dv), ba = g.tmp(2 * Hv);
    const gate = g.tmp(Hv), beta = g.tmp(Hv), o = g.tmp(Hv * dv);
    this.project(g, x, mixed, z, ba);
    causalConv(g, mixed, mixed, { w: this.convW, state: this.convState, W: convK, act: 'silu' });
    this.gates(g, gate, beta, ba);
    gatedDeltaRule(g, o, mixed, gate, beta, { Hk, Hv, dk, dv, state: this.deltaState, scale: 1 / Math.sqrt(dk) });
    // The gated RMSNorm: norm per value head, plain weight, then ⊙ SiLU(z).
    gatedRmsNorm(g, o, o, z, { w: this.normW, dim: dv, eps: cfg.eps });
    matmul(g, out, o, this.out);
  }
}

/** The width of the conv rows [q (Hk·dk) | k (Hk·dk) | v (Hv·dv)]. */
export function gatedDeltaConvDim(cfg: GatedDeltaNetConfig): number {
  return 2 * cfg.Hk * cfg.dk + cfg.Hv * cfg.dv;
}

/** A Gated DeltaNet whose inputs are three products: [q | k | v], z and [b | a]. */
export abstract class GatedDeltaProjected extends GatedDeltaCore {
  abstract readonly qkv: Weight;
  abstract readonly z: Weight;
  abstract readonly ba: Weight;

  protected project(g: Graph, x: Tensor, mixed: Tensor, z: Tensor, ba: Tensor): void {
    matmul(g, mixed, x, this.qkv);
    matmul(g, z, x, this.z);
    matmul(g, ba, x, this.ba);
  }
}

export class GatedDeltaNet extends GatedDeltaProjected {
  /** in_proj_qkvz with rows regrouped to [q (Hk·dk) | k (Hk·dk) | v (Hv·dv) | z (Hv·dv)]. */
  readonly qkvz: Weight;
  /** in_proj_ba with rows regrouped to [b (Hv) | a (Hv)]. */
  readonly ba: Weight;
  /** The q, k, v rows and the z rows of qkvz. */
  readonly qkv: Weight;
  readonly z: Weight;

  constructor(ctx: Ctx, prefix: string, cfg: GatedDeltaNetConfig) {
    super(ctx, prefix, cfg);
    const { ws } = ctx;
    const { hidden, Hk, Hv, dk, dv } = cfg;
    const r = Hv / Hk;
    const qkvzRows = 2 * Hk * dk + 2 * Hv * dv;
    this.qkvz = ws.mat(`${prefix}.in_proj_qkvz.weight`, qkvzRows, hidden);
    this.ba = ws.mat(`${prefix}.in_proj_ba.weight`, 2 * Hv, hidden);
    // HF fix_query_key_value_ordering: rows come in Hk groups of [q dk | k dk | v r·dv | z r·dv]
    // (in_proj_ba: groups of [b r | a r]); value head j belongs to key head j / r.
    const G = 2 * dk + 2 * r * dv;
    const order = new Int32Array(qkvzRows);
    let n = 0;
    const take = (off: number, len: number) => {
      for (let g = 0; g < Hk; g++) for (let i = 0; i < len; i++) order[n++] = g * G + off + i;
    };
    take(0, dk);
    take(dk, dk);
    take(2 * dk, r * dv);
    take(2 * dk + r * dv, r * dv);
    permuteRows(ctx, this.qkvz, order);
    const orderBa = new Int32Array(2 * Hv);
    n = 0;
    for (const off of [0, r]) for (let g = 0; g < Hk; g++) for (let i = 0; i < r; i++) orderBa[n++] = g * 2 * r + off + i;
    permuteRows(ctx, this.ba, orderBa);
    this.qkv = { ...rowsOf(this.qkvz, 0, this.convDim), name: `${prefix}.in_proj_qkvz.qkv` };
    this.z = { ...rowsOf(this.qkvz, this.convDim, Hv * dv), name: `${prefix}.in_proj_qkvz.z` };
  }
}

/**
 * The Gated DeltaNet config fields every Qwen-style hybrid reads the same way (linear_* heads, dims and
 * conv width), with their checks; `eps` is the gated norm's.
 */
export function parseGatedDelta(c: RawConfig, hidden: number, eps: number): GatedDeltaNetConfig {
  const gdn: GatedDeltaNetConfig = {
    hidden,
    Hk: int(c, 'linear_num_key_heads', 16),
    Hv: int(c, 'linear_num_value_heads', 32),
    dk: int(c, 'linear_key_head_dim', 128),
    dv: int(c, 'linear_value_head_dim', 128),
    convK: int(c, 'linear_conv_kernel_dim', 4),
    eps,
  };
  rejectIf(gdn.Hk < 1 || gdn.Hv % gdn.Hk !== 0, 'linear_num_value_heads', `${gdn.Hv} is not a multiple of linear_num_key_heads ${gdn.Hk}`);
  rejectIf(gdn.convK < 2 || gdn.convK > 4, 'linear_conv_kernel_dim', `${gdn.convK} is not supported (2 … 4)`);
  return gdn;
}

export type Qwen3NextLayerType = 'linear_attention' | 'full_attention';

/** The sparse MoE of Qwen3-Next layers: routed experts plus a sigmoid-gated shared expert. */
export interface Qwen3NextMoeConfig {
  nExperts: number;
  topk: number;
  /** moe_intermediate_size */
  inter: number;
  /** shared_expert_intermediate_size */
  sharedInter: number;
  /** norm_topk_prob */
  renormalize: boolean;
}

/** The fields of a Qwen-style hybrid config (Qwen3-Next, Qwen3.5) that its decoder is built from. */
export interface QwenHybridShape {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  /** Gated DeltaNet layers. */
  gdn: GatedDeltaNetConfig;
  layerTypes: Qwen3NextLayerType[];
  /** int(head_dim · partial_rotary_factor) */
  rotaryDim: number;
  rope: RopeParams;
  attnBias: boolean;
  /** intermediate_size of the dense layers; null when every layer is sparse. */
  denseInter: number | null;
  tieEmbeddings: boolean;
}

export interface Qwen3NextConfig extends QwenHybridShape {
  /** Whether each layer's feed-forward is the MoE (else a dense MLP of denseInter). */
  sparse: boolean[];
  /** null when no layer is sparse. */
  moe: Qwen3NextMoeConfig | null;
}

export function parseQwen3Next(c: RawConfig): Qwen3NextConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const actName = c.hidden_act ?? 'silu';
  const act = parseActivation(actName);
  // The conv activation is ACT2FN[hidden_act]; the conv kernel implements SiLU.
  rejectIf(act !== 'silu', 'hidden_act', `${JSON.stringify(actName)} is not supported (Qwen3-Next uses silu for its MLPs and convolutions)`);
  const gdn = parseGatedDelta(c, hidden, eps);
  const interval = int(c, 'full_attention_interval', 4);
  const types = layerTypes<Qwen3NextLayerType>(c, nLayers, ['linear_attention', 'full_attention'], (i) => ((i + 1) % interval ? 'linear_attention' : 'full_attention'));
  const prf = num(obj(c.rope_parameters), 'partial_rotary_factor', num(c, 'partial_rotary_factor', 0.25));
  const rotaryDim = Math.floor(attn.headDim * prf);
  rejectIf(rotaryDim < 2 || rotaryDim % 2 !== 0, 'partial_rotary_factor', `gives ${rotaryDim} rotary dims of head_dim ${attn.headDim}; need an even number ≥ 2`);
  const attnBias = bool(c, 'attention_bias', false);

  const nExperts = int(c, 'num_experts', 512);
  const sparse = qwenSparseLayers(c, nLayers, nExperts);
  const topk = int(c, 'num_experts_per_tok', 10);
  if (nExperts > 0) rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
  const moe: Qwen3NextMoeConfig | null = sparse.some((s) => s) ? {
    nExperts, topk,
    inter: int(c, 'moe_intermediate_size', 512),
    sharedInter: int(c, 'shared_expert_intermediate_size', 512),
    renormalize: bool(c, 'norm_topk_prob', true),
  } : null;
  return {
    hidden, nLayers, vocab, attn, eps, act, gdn, layerTypes: types, rotaryDim, rope: ropeParams(c), attnBias,
    sparse, moe, denseInter: sparse.every((s) => s) ? null : int(c, 'intermediate_size'),
    // Qwen3NextConfig.tie_word_embeddings defaults to false.
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/** The sparse MoE of a Qwen-style hybrid layer: softmax top-k routed experts plus a sigmoid-gated shared expert. */
export function qwenSharedExpertMoe(ctx: Ctx, moe: string, hidden: number, act: Activation, m: Qwen3NextMoeConfig): Moe {
  const { ws } = ctx;
  const { nExperts, topk, inter: I, sharedInter: sharedI } = m;
  return new Moe(ctx, {
    hidden, nExperts, topk, inter: I, act,
    routing: { mode: 'softmax_topk', renormalize: m.renormalize },
    router: ws.mat(`${moe}.gate.weight`, nExperts, hidden),
    expert: expertWeights(ws, moe, nExperts, I, hidden),
    shared: {
      inter: sharedI,
      w: {
        gate: ws.mat(`${moe}.shared_expert.gate_proj.weight`, sharedI, hidden),
        up: ws.mat(`${moe}.shared_expert.up_proj.weight`, sharedI, hidden),
        down: ws.mat(`${moe}.shared_expert.down_proj.weight`, hidden, sharedI),
      },
      gate: ws.mat(`${moe}.shared_expert_gate.weight`, 1, hidden),
    },
  });
}

/**
 * Builds a Qwen-style hybrid decoder: per layer the `linear` mixer or gated attention with zero-centred
 * q/k norms, then the MoE that `moeAt(i)` gives (else a dense MLP of denseInter), in zero-centred
 * pre-norm blocks. `m` is the prefix of the language model's weights.
 */
export function buildQwenHybrid(ctx: Ctx, c: QwenHybridShape, m: string, linear: (prefix: string) => Mixer, moeAt: (layer: number) => Qwen3NextMoeConfig | null): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, act, attnBias } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim, c.rotaryDim);

  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `${m}.layers.${i}`;
    const isLinear = c.layerTypes[i] === 'linear_attention';
    const mixer: Mixer = isLinear
      ? linear(`${p}.linear_attn`)
      : new Attention(ctx, `${p}.self_attn`, {
        hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: attnBias,
        qkNorm: { eps, addOne: true }, rope, scale: 1 / Math.sqrt(headDim), gated: true,
      });
    const moe = moeAt(i);
    const ffn: Ffn = moe
      ? qwenSharedExpertMoe(ctx, `${p}.mlp`, hidden, act, moe)
      : new GatedMlp(ctx, `${p}.mlp`, hidden, c.denseInter!, act);
    blocks.push(new PreNormBlock(ctx, {
      kind: isLinear ? 'linear_attention' : 'attention', hidden, mixer, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps, addOne: true },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps, addOne: true },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat(`${m}.embed_tokens.weight`, vocab, hidden), blocks,
    finalNorm: { w: ws.vec(`${m}.norm.weight`, hidden), eps, addOne: true },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden, `${m}.embed_tokens.weight`),
  });
}

export function buildQwen3Next(ctx: Ctx, c: Qwen3NextConfig): Net {
  return buildQwenHybrid(ctx, c, 'model', (p) => new GatedDeltaNet(ctx, p, c.gdn), (i) => (c.sparse[i] ? c.moe : null));
}

export const qwen3Next: Family<Qwen3NextConfig> = {
  types: ['qwen3_next'],
  keepF32: (name) => name.endsWith('.conv1d.weight') || name.endsWith('.A_log') || name.endsWith('.dt_bias'),
  // Multi-token-prediction heads of the released checkpoints (HF _keys_to_ignore_on_load_unexpected).
  ignore: (name) => name.startsWith('mtp.'),
  parse: parseQwen3Next,
  build: buildQwen3Next,
};
