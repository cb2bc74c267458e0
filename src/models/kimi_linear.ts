// Kimi Linear (KimiLinearForCausalLM): a hybrid decoder of Kimi Delta Attention layers and MLA layers
// (`layer_types`: linear_attention / full_attention), each followed by a DeepSeek-style MoE (sigmoid
// router with e_score_correction_bias and group-limited selection, routed_scaling_factor, shared
// experts as one MLP) or a dense MLP (`mlp_layer_types`, else the first first_k_dense_replace layers).
// Every RMSNorm is plain x̂·w.
//
// Kimi Delta Attention (KimiLinearDeltaAttention), H heads of size d (keys and values alike):
//   [q k v] = SiLU(causal_conv1d_K([q_proj x; k_proj x; v_proj x]))       (depthwise, no bias)
//   q, k = l2norm(q), l2norm(k) (eps 1e-6);  q ← q · d^−½
//   g = −exp(A_log_h) · softplus(f_b(f_a x) + dt_bias)   (one log-decay per key channel)
//   β = sigmoid(b_proj x)
//   S ← Diag(exp(g)) S;  S ← S + k (β (v − Sᵀk))ᵀ;  o = Sᵀ q            (S [d, d] per head, f32)
//   out = o_proj( RMSNorm_head(o)·w ⊙ sigmoid(g_b(g_a x)) )
//
// MLA (KimiLinearAttention) is DeepSeek-V3's with no rotary embedding at all: the qk_rope_head_dim
// part of the keys is the shared kv_a_proj_with_mqa output as is. It runs as DeepSeek's latent-cache
// MLA with an identity rotation (zero frequencies: cos 1, sin 0, exact).
//
// Checkpoints (the original release, and what transformers' save_pretrained writes back) name the
// feed-forward `block_sparse_moe` with per-expert w1/w3/w2, split the conv into q/k/v_conv1d and keep
// the forget gate's f_a_proj, f_b_proj, A_log, dt_bias on the attention module; transformers' own
// module names (mlp, fused experts, conv1d, forget_gate.*) load as well.

import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { causalConv, copy, matmul, mulSigmoid, norm, sigmoid, type RopeSpec } from '../graph/ops';
import { gatedDeltaRule, kdaGates } from '../graph/ops-delta';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation, type GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { ConfigError } from '../formats/errors';
import type { WeightStore } from '../runtime/weights';
import type { RegionSpec } from '../runtime/state';
import { bool, int, lmHead, num, obj, rejectIf, type RawConfig } from './common';
import { MlaAttention, type MlaConfig } from './deepseek_v3';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertWeights, keepKvbF32 } from './shared';

export interface KdaConfig {
  hidden: number;
  /** linear_num_heads */
  H: number;
  /** linear_head_dim (keys and values) */
  d: number;
  /** linear_conv_kernel_dim */
  convK: number;
  /** rms_norm_eps of the output norm */
  eps: number;
}

/** The first of `names` the checkpoint holds (the original release's, or transformers' module names). */
function pick(ws: WeightStore, ...names: string[]): string {
  for (const n of names) if (ws.has(n)) return n;
  throw new ConfigError(`tensors["${names[0]}"]`, `missing from the checkpoint (nor ${names.slice(1).map((n) => `"${n}"`).join(', ')})`);
}

/** Kimi Delta Attention (see the file header). */
export class KimiDeltaAttention implements Mixer {
  readonly q: Weight;
  readonly k: Weight;
  readonly v: Weight;
  /** Conv taps [3·H·d, K] of the packed [q | k | v] channels (arena, f32). */
  readonly convW: number;
  readonly fa: Weight;
  readonly fb: Weight;
  /** Arena vectors: A_log [H], dt_bias [H·d], o_norm weight [d]. */
  readonly aLog: number;
  readonly dtBias: number;
  readonly normW: number;
  readonly b: Weight;
  readonly ga: Weight;
  readonly gb: Weight;
  readonly o: Weight;
  /** Session state: the conv window of q, k, v. */
  readonly convState: RegionSpec;
  /** Session state: the delta rule state [H, d, d]. */
  readonly deltaState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: KdaConfig) {
    const { ws } = ctx;
    const { hidden, H, d, convK } = cfg;
    const C = H * d;
    this.q = ws.mat(`${prefix}.q_proj.weight`, C, hidden);
    this.k = ws.mat(`${prefix}.k_proj.weight`, C, hidden);
    this.v = ws.mat(`${prefix}.v_proj.weight`, C, hidden);
    if (ws.has(`${prefix}.conv1d.weight`)) {
      this.convW = ws.vec(`${prefix}.conv1d.weight`, 3 * C * convK);
    } else {
      const taps = new Float32Array(3 * C * convK);
      ['q', 'k', 'v'].forEach((n, i) => taps.set(ctx.f32(ws.vec(`${prefix}.${n}_conv1d.weight`, C * convK), C * convK), i * C * convK));
      this.convW = ctx.k.arena.putF32(taps).ptr;
    }
    const fg = ws.has(`${prefix}.forget_gate.f_a_proj.weight`) ? `${prefix}.forget_gate` : prefix;
    this.fa = ws.mat(`${fg}.f_a_proj.weight`, d, hidden);
    this.fb = ws.mat(`${fg}.f_b_proj.weight`, C, d);
    this.aLog = ws.vec(`${fg}.A_log`, H);
    this.dtBias = ws.vec(`${fg}.dt_bias`, C);
    this.b = ws.mat(`${prefix}.b_proj.weight`, H, hidden);
    this.ga = ws.mat(`${prefix}.g_a_proj.weight`, d, hidden);
    this.gb = ws.mat(`${prefix}.g_b_proj.weight`, C, d);
    this.normW = ws.vec(`${prefix}.o_norm.weight`, d);
    this.o = ws.mat(`${prefix}.o_proj.weight`, hidden, C);
    this.convState = { name: `${prefix}.conv`, kind: 'fixed', floats: 3 * C * (convK - 1) };
    this.deltaState = { name: `${prefix}.S`, kind: 'fixed', floats: H * d * d };
  }

  specs(): RegionSpec[] {
    return [this.convState, this.deltaState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { H, d, convK, eps } = this.cfg;
    const C = H * d;
    const qkv = g.tmp(3 * C), t = g.tmp(C);
    [this.q, this.k, this.v].forEach((w, i) => {
      matmul(g, t, x, w);
      copy(g, qkv, t, { chunks: 1, len: C, yOff: i * C });
    });
    causalConv(g, qkv, qkv, { w: this.convW, state: this.convState, W: convK, act: 'silu' });
    // Per-channel log-decay and write strength.
    const low = g.tmp(d), gate = g.tmp(C), beta = g.tmp(H);
    matmul(g, low, x, this.fa);
    matmul(g, gate, low, this.fb);
    kdaGates(g, gate, { aLog: this.aLog, dtBias: this.dtBias, dk: d });
    matmul(g, beta, x, this.b);
    sigmoid(g, beta, beta);
    const o = g.tmp(C);
    gatedDeltaRule(g, o, qkv, gate, beta, { Hk: H, Hv: H, dk: d, dv: d, state: this.deltaState, scale: 1 / Math.sqrt(d), perChannel: true });
    // KimiLinearRMSNormGated: norm per head, weight, then ⊙ sigmoid(output gate).
    matmul(g, low, x, this.ga);
    matmul(g, t, low, this.gb);
    norm(g, { w: this.normW, eps }, o, o, d);
    mulSigmoid(g, o, o, t);
    matmul(g, out, o, this.o);
  }
}

export type KimiLayerType = 'linear_attention' | 'full_attention';

export interface KimiMoeConfig {
  /** num_experts (num_local_experts) */
  nExperts: number;
  /** num_experts_per_token (num_experts_per_tok) */
  topk: number;
  /** moe_intermediate_size, of each routed expert and of each shared one */
  inter: number;
  /** num_shared_experts (n_shared_experts): one MLP of nShared·inter */
  nShared: number;
  /** num_expert_group (n_group), topk_group */
  nGroup: number;
  topkGroup: number;
  /** moe_renormalize (norm_topk_prob) */
  renormalize: boolean;
  routedScaling: number;
}

export interface KimiLinearConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  kda: KdaConfig;
  /** MLA settings without the rotation (the layer gets an identity RoPE). */
  mla: Omit<MlaConfig, 'rope'>;
  layerTypes: KimiLayerType[];
  /** Whether each layer's feed-forward is the MoE (else a dense MLP of denseInter). */
  sparse: boolean[];
  moe: KimiMoeConfig | null;
  denseInter: number | null;
}

/** A field under either of its names (KimiLinearConfig.attribute_map stores some under the other). */
function alias(c: RawConfig, names: string[]): string {
  return names.find((n) => c[n] !== undefined && c[n] !== null) ?? names[0];
}

export function parseKimiLinear(c: RawConfig): KimiLinearConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-5);
  const actName = c.hidden_act ?? 'silu';
  const act = parseActivation(actName);
  // hidden_act is also the activation after the short convolution, which the conv kernel runs as SiLU.
  rejectIf(act !== 'silu', 'hidden_act', `${JSON.stringify(actName)} is not supported (the KDA convolution runs SiLU)`);

  // The checkpoint's linear_attn_config overrides the flat fields (KimiLinearConfig.__post_init__).
  const lac = obj(c.linear_attn_config);
  const kda: KdaConfig = {
    hidden,
    H: lac.num_heads !== undefined ? int(lac, 'num_heads') : int(c, 'linear_num_heads', 32),
    d: lac.head_dim !== undefined ? int(lac, 'head_dim') : int(c, 'linear_head_dim', 128),
    convK: lac.short_conv_kernel_size !== undefined ? int(lac, 'short_conv_kernel_size') : int(c, 'linear_conv_kernel_dim', 4),
    eps,
  };
  rejectIf(kda.H < 1 || kda.d < 1, 'linear_num_heads', 'linear attention heads and head size must be ≥ 1');
  rejectIf(kda.convK < 2 || kda.convK > 4, 'linear_conv_kernel_dim', `${kda.convK} is not supported (2 … 4)`);

  let types: unknown[];
  if (Array.isArray(c.layer_types)) types = c.layer_types;
  else if (Array.isArray(lac.full_attn_layers) && Array.isArray(lac.kda_layers)) {
    // 1-based layer numbers.
    types = new Array(nLayers).fill(null);
    for (const l of lac.full_attn_layers as unknown[]) if (Number.isInteger(l)) types[(l as number) - 1] = 'full_attention';
    for (const l of lac.kda_layers as unknown[]) if (Number.isInteger(l)) types[(l as number) - 1] = 'linear_attention';
  } else types = Array.from({ length: nLayers }, (_, i) => (i && i % 4 === 0 ? 'full_attention' : 'linear_attention'));
  rejectIf(types.length !== nLayers, 'layer_types', `has ${types.length} entries for ${nLayers} layers`);
  types.forEach((t, i) => rejectIf(t !== 'linear_attention' && t !== 'full_attention', `layer_types[${i}]`, `${JSON.stringify(t)} is not linear_attention or full_attention`));

  const nHeads = int(c, 'num_attention_heads');
  const qLora = c.q_lora_rank === null || c.q_lora_rank === undefined ? 0 : int(c, 'q_lora_rank');
  const kvLora = int(c, 'kv_lora_rank', 512);
  const dNope = int(c, 'qk_nope_head_dim', 128);
  const dRope = int(c, 'qk_rope_head_dim', 64);
  const dV = int(c, 'v_head_dim', 128);
  rejectIf(kvLora < 1, 'kv_lora_rank', 'must be ≥ 1');
  rejectIf(dRope < 2 || dRope % 2 !== 0, 'qk_rope_head_dim', `${dRope} is not supported (the shared key part must be an even number ≥ 2 of dims)`);
  rejectIf(dV < 1, 'v_head_dim', 'must be ≥ 1');
  const nKv = int(c, 'num_key_value_heads', nHeads);
  rejectIf(nKv !== nHeads, 'num_key_value_heads', `${nKv} != num_attention_heads ${nHeads}: kv_b_proj yields one key/value per query head`);
  rejectIf((c.pretraining_tp ?? 1) !== 1, 'pretraining_tp', 'only 1 is supported');
  const mla: Omit<MlaConfig, 'rope'> = {
    hidden, nHeads, qLora, kvLora, dNope, dRope, dV, bias: bool(c, 'attention_bias', false), scale: 1 / Math.sqrt(dNope + dRope),
  };

  let sparse: boolean[];
  const mt = c.mlp_layer_types;
  if (Array.isArray(mt)) {
    rejectIf(mt.length !== nLayers, 'mlp_layer_types', `has ${mt.length} entries for ${nLayers} layers`);
    mt.forEach((t, i) => rejectIf(t !== 'dense' && t !== 'sparse', `mlp_layer_types[${i}]`, `${JSON.stringify(t)} is not dense or sparse`));
    sparse = mt.map((t) => t === 'sparse');
  } else {
    const k = int(c, 'first_k_dense_replace', 1);
    sparse = Array.from({ length: nLayers }, (_, i) => i >= k);
  }
  let moe: KimiMoeConfig | null = null;
  if (sparse.some((s) => s)) {
    const fE = alias(c, ['num_experts', 'num_local_experts', 'n_routed_experts']);
    const fK = alias(c, ['num_experts_per_token', 'num_experts_per_tok']);
    const fS = alias(c, ['num_shared_experts', 'n_shared_experts']);
    const fG = alias(c, ['num_expert_group', 'n_group']);
    const fR = alias(c, ['moe_renormalize', 'norm_topk_prob']);
    const E = int(c, fE, 256);
    const topk = int(c, fK, 8);
    const nGroup = int(c, fG, 1);
    const topkGroup = int(c, 'topk_group', 1);
    rejectIf(topk < 1 || topk > E, fK, `${topk} must be in [1, ${E}]`);
    rejectIf(nGroup < 1 || E % nGroup !== 0, fG, `${nGroup} must divide the ${E} experts`);
    rejectIf(nGroup > 1 && E / nGroup < 2, fG, `groups of ${E / nGroup} expert: the group score sums each group's best two`);
    rejectIf(topkGroup < 1 || topkGroup > nGroup, 'topk_group', `${topkGroup} must be in [1, ${nGroup}]`);
    rejectIf(topkGroup * (E / nGroup) < topk, 'topk_group', `${topkGroup} groups of ${E / nGroup} experts hold fewer than ${topk}`);
    const fn = c.moe_router_activation_func;
    rejectIf(fn !== undefined && fn !== null && fn !== 'sigmoid', 'moe_router_activation_func', `${JSON.stringify(fn)} is not supported (sigmoid)`);
    moe = {
      nExperts: E, topk, inter: int(c, 'moe_intermediate_size', 1024), nShared: int(c, fS, 1), nGroup, topkGroup,
      renormalize: bool(c, fR, true), routedScaling: num(c, 'routed_scaling_factor', 2.446),
    };
  }
  return {
    hidden, nLayers, vocab, eps, act, kda, mla, layerTypes: types as KimiLayerType[], sparse, moe,
    denseInter: sparse.every((s) => s) ? null : int(c, 'intermediate_size'),
  };
}

/** KimiLinearMoE: sigmoid-routed experts plus the shared experts as one MLP. */
function kimiMoe(ctx: Ctx, m: KimiMoeConfig, hidden: number, mp: string, act: Activation): Ffn {
  const { ws } = ctx;
  const { nExperts: E, inter, nShared } = m;
  let shared: { w: GatedWeights; inter: number } | undefined;
  if (nShared > 0) {
    const si = inter * nShared, sp = `${mp}.shared_experts`;
    shared = {
      inter: si,
      w: {
        gate: ws.mat(`${sp}.gate_proj.weight`, si, hidden),
        up: ws.mat(`${sp}.up_proj.weight`, si, hidden),
        down: ws.mat(`${sp}.down_proj.weight`, hidden, si),
      },
    };
  }
  return new Moe(ctx, {
    hidden, nExperts: E, topk: m.topk, inter, act,
    routing: {
      mode: 'sigmoid', renormalize: m.renormalize, bias: ws.optVec(`${mp}.gate.e_score_correction_bias`, E) || undefined,
      nGroup: m.nGroup, topkGroup: m.topkGroup, routedScaling: m.routedScaling,
    },
    router: ws.mat(`${mp}.gate.weight`, E, hidden),
    expert: expertWeights(ws, mp, E, inter, hidden),
    shared,
  });
}

export function buildKimiLinear(ctx: Ctx, c: KimiLinearConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, act } = c;
  // No rotary embedding: zero frequencies rotate by 0 (cos 1, sin 0), which leaves the keys exact.
  const rope: RopeSpec = { invFreq: new Float32Array(c.mla.dRope / 2), rotaryDim: c.mla.dRope, style: 'neox', attentionFactor: 1 };
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const linear = c.layerTypes[i] === 'linear_attention';
    const mixer: Mixer = linear ? new KimiDeltaAttention(ctx, `${p}.self_attn`, c.kda) : new MlaAttention(ctx, `${p}.self_attn`, { ...c.mla, rope });
    // save_pretrained renames every `.mlp.` to `.block_sparse_moe.` (the original checkpoints' name of the MoE).
    const probe = c.sparse[i] ? 'gate.weight' : 'gate_proj.weight';
    const mp = pick(ws, `${p}.block_sparse_moe.${probe}`, `${p}.mlp.${probe}`).slice(0, -(probe.length + 1));
    const ffn: Ffn = c.sparse[i] && c.moe ? kimiMoe(ctx, c.moe, hidden, mp, act) : new GatedMlp(ctx, mp, hidden, c.denseInter!, act);
    blocks.push(new PreNormBlock(ctx, {
      kind: linear ? 'linear_attention' : 'mla_attention', hidden, mixer, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    // KimiLinearForCausalLM ties nothing (_tied_weights_keys is empty): its own lm_head when present.
    lmHead: lmHead(ws, !ws.has('lm_head.weight'), vocab, hidden),
  });
}

export const kimiLinear: Family<KimiLinearConfig> = {
  types: ['kimi_linear'],
  keepF32: (name) => keepKvbF32(name) || /conv1d\.weight$|\.A_log$|\.dt_bias$/.test(name),
  parse: parseKimiLinear,
  build: buildKimiLinear,
};
