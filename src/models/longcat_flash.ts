// LongCat-Flash (LongcatFlashForCausalLM): num_layers decoder layers, each two pre-norm sublayers of
// DeepSeek-style Multi-head Latent Attention and a dense SwiGLU MLP, plus one "shortcut" MoE that reads
// the first sublayer's MLP input and is added at the end of the layer:
//   x ← x + attn₀(input_layernorm₀(x));  h = post_attention_layernorm₀(x)
//   s = moe(h);  x ← x + mlp₀(h)
//   x ← x + attn₁(input_layernorm₁(x));  x ← x + mlp₁(post_attention_layernorm₁(x)) + s
// MLA as DeepSeek-V3's (deepseek_v3.ts; q through q_a_proj / q_a_layernorm / q_b_proj always), with
// the query scaled by √(hidden / q_lora_rank) (folded into the softmax scale) and the normalised KV
// latent by √(hidden / kv_lora_rank) (folded into kv_a_layernorm's weight); RoPE over head_dim
// (= qk_rope_head_dim) dims in interleaved pairs.
// The MoE (ops-zeromoe.ts) routes over n_routed_experts real experts and zero_expert_num identity
// experts: softmax over all, top moe_topk of softmax + e_score_correction_bias, weights = softmax ·
// routed_scaling_factor. The zero experts have no weights that are used (see longcatExperts).

import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { add, norm, type NormSpec } from '../graph/ops';
import { zeroMoe, type ZeroMoeSpec } from '../graph/ops-zeromoe';
import type { Ctx, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, rowsOf, type Activation, type GatedWeights } from '../layers/mlp';
import { ConfigError } from '../formats/errors';
import { bool, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type RawConfig, type RopeParams } from './common';
import { DecoderNet, type Block } from './decoder';
import { MlaAttention } from './deepseek_v3';
import type { Family, Net } from './net';
import { keepKvbF32 } from './shared';
import type { RegionSpec } from '../runtime/state';

export interface LongcatConfig {
  hidden: number;
  /** num_layers (each with two attention sublayers) */
  nLayers: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  nHeads: number;
  qLora: number;
  kvLora: number;
  dNope: number;
  dRope: number;
  dV: number;
  attnBias: boolean;
  rope: RopeParams;
  /** Softmax scale: qk_head_dim^−½ (× mscale² for scaled RoPE with mscale_all_dim) × √(hidden / q_lora_rank). */
  scale: number;
  /** √(hidden / kv_lora_rank) */
  kvScale: number;
  /** ffn_hidden_size of the dense MLPs */
  inter: number;
  /** n_routed_experts, zero_expert_num, moe_topk, expert_ffn_hidden_size, routed_scaling_factor */
  nExperts: number;
  nZero: number;
  topk: number;
  expertInter: number;
  routedScaling: number;
  routerBias: boolean;
  tieEmbeddings: boolean;
}

export function parseLongcat(c: RawConfig): LongcatConfig {
  const hidden = int(c, 'hidden_size');
  const nHeads = int(c, 'num_attention_heads');
  const nKv = int(c, 'num_key_value_heads', nHeads);
  rejectIf(nKv !== nHeads, 'num_key_value_heads', `${nKv} != num_attention_heads ${nHeads}: kv_b_proj yields one key/value per query head`);
  rejectIf(c.q_lora_rank === null, 'q_lora_rank', 'must be set (LongCat-Flash always projects queries through q_a_proj)');
  const qLora = int(c, 'q_lora_rank', 1536);
  const kvLora = int(c, 'kv_lora_rank', 512);
  const dNope = int(c, 'qk_nope_head_dim', 128);
  const dRope = int(c, 'qk_rope_head_dim', 64);
  const dV = int(c, 'v_head_dim', 128);
  rejectIf(qLora < 1, 'q_lora_rank', 'must be ≥ 1');
  rejectIf(kvLora < 1, 'kv_lora_rank', 'must be ≥ 1');
  rejectIf(dRope < 2 || dRope % 2 !== 0, 'qk_rope_head_dim', `must be an even number ≥ 2, got ${dRope}`);
  rejectIf(dV < 1, 'v_head_dim', 'must be ≥ 1');
  const qkHead = c.qk_head_dim ?? null;
  rejectIf(qkHead !== null && qkHead !== dNope + dRope, 'qk_head_dim', `${JSON.stringify(qkHead)} != qk_nope_head_dim + qk_rope_head_dim (${dNope + dRope})`);
  // The rotary tables are built for head_dim dims and applied to the qk_rope_head_dim slice.
  const headDim = int(c, 'head_dim', 64);
  rejectIf(headDim !== dRope, 'head_dim', `${headDim} != qk_rope_head_dim ${dRope} (the RoPE spans head_dim dims of the rotary slice)`);

  // LongcatFlashMLA.scaling: qk_head_dim^−½, times mscale² for a scaled RoPE with mscale_all_dim.
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
  scale *= Math.sqrt(hidden / qLora);

  const nExperts = int(c, 'n_routed_experts', 512);
  const nZero = c.zero_expert_num === null ? 0 : int(c, 'zero_expert_num', 256);
  const topk = int(c, 'moe_topk', 12);
  rejectIf(nExperts < 1, 'n_routed_experts', 'must be ≥ 1');
  rejectIf(topk < 1 || topk > nExperts + nZero, 'moe_topk', `${topk} must be in [1, ${nExperts + nZero}]`);
  return {
    hidden, nLayers: int(c, 'num_layers', 28), vocab: int(c, 'vocab_size'),
    eps: num(c, 'rms_norm_eps', 1e-5),
    act: parseActivation(c.hidden_act ?? 'silu'),
    nHeads, qLora, kvLora, dNope, dRope, dV,
    attnBias: bool(c, 'attention_bias', false),
    rope, scale, kvScale: Math.sqrt(hidden / kvLora),
    inter: int(c, 'ffn_hidden_size', 12288),
    nExperts, nZero, topk,
    expertInter: int(c, 'expert_ffn_hidden_size', 2048),
    routedScaling: num(c, 'routed_scaling_factor', 6),
    routerBias: bool(c, 'router_bias', false),
    // LongcatFlashConfig.tie_word_embeddings defaults to false.
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/**
 * The real experts of a MoE: fused `experts.gate_up_proj` [n_routed + zero, 2I, hidden] (a block per
 * expert, zero experts included) with `experts.down_proj` [n_routed, hidden, I], or per-expert
 * `experts.N.gate_proj` / `up_proj` / `down_proj` as save_pretrained writes them.
 */
function longcatExperts(ctx: Ctx, mp: string, E: number, I: number, H: number): (e: number) => GatedWeights {
  const { ws } = ctx;
  const gu = `${mp}.experts.gate_up_proj`, down = `${mp}.experts.down_proj`;
  if (!ws.has(gu)) {
    return (e) => ({
      gate: ws.mat(`${mp}.experts.${e}.gate_proj.weight`, I, H),
      up: ws.mat(`${mp}.experts.${e}.up_proj.weight`, I, H),
      down: ws.mat(`${mp}.experts.${e}.down_proj.weight`, H, I),
    });
  }
  const guShape = ws.shape(gu), downShape = ws.shape(down);
  if (guShape.length !== 3 || guShape[0] < E || guShape[1] !== 2 * I || guShape[2] !== H) {
    throw new ConfigError(`tensors["${gu}"].shape`, `is [${guShape}], expected [${E} + zero experts, ${2 * I}, ${H}]`);
  }
  if (downShape.length !== 3 || downShape[0] !== E || downShape[1] !== H || downShape[2] !== I) {
    throw new ConfigError(`tensors["${down}"].shape`, `is [${downShape}], expected [${E}, ${H}, ${I}]`);
  }
  return (e) => {
    const w: Weight = ws.slice(gu, e, 2 * I, H);
    return { gate: rowsOf(w, 0, I), up: rowsOf(w, I, I), down: ws.slice(down, e, H, I) };
  };
}

/** The two sublayers and the shortcut MoE of one LongCat-Flash layer (see the file header). */
class LongcatBlock implements Block {
  readonly kind = 'mla_attention';
  constructor(
    readonly hidden: number,
    readonly attn: [Mixer, Mixer],
    readonly mlp: [GatedMlp, GatedMlp],
    readonly pre: [NormSpec, NormSpec],
    readonly post: [NormSpec, NormSpec],
    readonly moe: ZeroMoeSpec,
  ) {}

  specs(maxContext: number): RegionSpec[] {
    return [...this.attn[0].specs(maxContext), ...this.attn[1].specs(maxContext)];
  }

  forward(g: Graph, x: Tensor): void {
    const H = this.hidden;
    const h = g.tmp(H), o = g.tmp(H), s = g.tmp(H);
    norm(g, this.pre[0], h, x);
    this.attn[0].forward(g, h, o);
    add(g, x, x, o);
    norm(g, this.post[0], h, x);
    zeroMoe(g, s, h, this.moe);
    this.mlp[0].forward(g, h, o);
    add(g, x, x, o);
    norm(g, this.pre[1], h, x);
    this.attn[1].forward(g, h, o);
    add(g, x, x, o);
    norm(g, this.post[1], h, x);
    this.mlp[1].forward(g, h, o);
    add(g, x, x, o);
    add(g, x, x, s);
  }
}

export function buildLongcat(ctx: Ctx, c: LongcatConfig): Net {
  const { ws } = ctx;
  const { hidden: H, vocab, eps, act } = c;
  const rope = ropeSpec(c.rope, c.dRope, c.dRope, 'interleaved');
  const N = c.nExperts + c.nZero, I = c.expertInter;
  const blocks: Block[] = [];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `model.layers.${i}`;
    const mla = (j: number): Mixer => {
      const a = new MlaAttention(ctx, `${p}.self_attn.${j}`, {
        hidden: H, nHeads: c.nHeads, qLora: c.qLora, kvLora: c.kvLora, dNope: c.dNope, dRope: c.dRope, dV: c.dV,
        bias: c.attnBias, rope, scale: c.scale,
      });
      // The normalised latent times √(hidden / kv_lora_rank): folded into kv_a_layernorm's weight.
      const w = ctx.f32(a.kvaNorm, c.kvLora);
      for (let r = 0; r < c.kvLora; r++) w[r] = Math.fround(w[r] * c.kvScale);
      return a;
    };
    const attn: [Mixer, Mixer] = [mla(0), mla(1)];
    const mlp: [GatedMlp, GatedMlp] = [new GatedMlp(ctx, `${p}.mlps.0`, H, c.inter, act), new GatedMlp(ctx, `${p}.mlps.1`, H, c.inter, act)];
    const nv = (n: string): NormSpec => ({ w: ws.vec(`${p}.${n}.weight`, H), eps });
    const mp = `${p}.mlp`;
    const moe: ZeroMoeSpec = {
      name: mp, hidden: H, nExperts: c.nExperts, nZero: c.nZero, topk: c.topk, inter: I, act,
      router: ws.mat(`${mp}.router.classifier.weight`, N, H),
      routerBias: c.routerBias ? ws.vec(`${mp}.router.classifier.bias`, N) : 0,
      bias: ws.optVec(`${mp}.router.e_score_correction_bias`, N),
      routedScaling: c.routedScaling,
      expert: longcatExperts(ctx, mp, c.nExperts, I, H),
    };
    blocks.push(new LongcatBlock(H, attn, mlp, [nv('input_layernorm.0'), nv('input_layernorm.1')], [nv('post_attention_layernorm.0'), nv('post_attention_layernorm.1')], moe));
  }
  return new DecoderNet(ctx, {
    hidden: H, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, H), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', H), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, H),
  });
}

/** Whether a tensor is a per-expert projection of a zero expert (id ≥ n_routed_experts). */
function isZeroExpertTensor(name: string, config: RawConfig): boolean {
  const m = /\.mlp\.experts\.(\d+)\./.exec(name);
  const E = config.n_routed_experts;
  return !!m && typeof E === 'number' && Number(m[1]) >= E;
}

export const longcatFlash: Family<LongcatConfig> = {
  types: ['longcat_flash'],
  keepF32: (name) => keepKvbF32(name) || name.endsWith('.router.classifier.weight') || name.endsWith('.e_score_correction_bias'),
  // Multi-token-prediction layers of the released checkpoints (HF _keys_to_ignore_on_load_unexpected),
  // and the per-expert projections save_pretrained writes for the zero experts (never used).
  ignore: (name, config) => name.startsWith('model.mtp.') || isZeroExpertTensor(name, config),
  parse: parseLongcat,
  build: buildLongcat,
};
