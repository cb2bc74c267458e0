// LFM2-MoE (Lfm2MoeForCausalLM): LFM2's pre-norm decoder of gated short convolutions and GQA
// attention with per-head q/k RMSNorm (`layer_types` "conv" / "full_attention"), whose feed-forward is
// a dense SwiGLU MLP (w1 gate, w3 up, w2 down; width intermediate_size as given) on the first
// num_dense_layers layers and a sparse MoE on the others. The final norm is `embedding_norm`.
//
// Router (HF Lfm2MoeSparseMoeBlock.route_tokens_to_experts), per token:
//   s = sigmoid(gate x);  picks = top-k of s + expert_bias (bias for selection only, when use_expert_bias)
//   w = s[picks], ÷ (Σ w + 1e-6) when norm_topk_prob, × routed_scaling_factor
// The router op divides by Σ w + 1e-20: for the sums of k sigmoids this differs from HF's 1e-6 by a
// relative 1e-6 / Σ w at most, far inside float32 parity of the logits.
// Experts: fused experts.gate_up_proj [E, 2I, D] (gate rows first) and experts.down_proj [E, D, I], SiLU.
// The short conv (ShortConv) and attention are LFM2's (lfm2.ts).

import { ConfigError } from '../formats/errors';
import type { RouteOptions } from '../kernels/moe';
import type { Ctx, Ffn } from '../layers/context';
import { Moe } from '../layers/moe';
import { attentionShape, bool, int, layerTypes, num, rejectIf, ropeParams, type RawConfig } from './common';
import { buildLfm2Net, lfm2Mlp, rejectPartialScaledRope, type Lfm2LayerType, type Lfm2Shape } from './lfm2';
import type { Family, Net } from './net';
import { expertWeights } from './shared';

export interface Lfm2MoeRouting {
  nExperts: number;
  topk: number;
  /** moe_intermediate_size */
  inter: number;
  /** use_expert_bias: expert_bias shifts the selection scores. */
  expertBias: boolean;
  /** norm_topk_prob */
  renormalize: boolean;
  /** routed_scaling_factor */
  routedScaling: number;
}

export interface Lfm2MoeConfig extends Lfm2Shape {
  /** The first num_dense_layers layers have a dense MLP of denseInter (intermediate_size). */
  nDense: number;
  denseInter: number;
  /** null when every layer is dense. */
  moe: Lfm2MoeRouting | null;
}

export function parseLfm2Moe(c: RawConfig): Lfm2MoeConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const vocab = int(c, 'vocab_size');
  const convL = int(c, 'conv_L_cache', 3);
  rejectIf(convL < 2 || convL > 4, 'conv_L_cache', `${convL} is not supported (2 … 4)`);
  // HF reads config.layer_types for every layer (no default rule).
  rejectIf(!Array.isArray(c.layer_types), 'layer_types', 'is required (a list of "conv" / "full_attention")');
  const types = layerTypes<Lfm2LayerType>(c, nLayers, ['conv', 'full_attention'], () => 'conv');
  const nDense = Math.min(int(c, 'num_dense_layers', 2), nLayers);
  let moe: Lfm2MoeRouting | null = null;
  if (nDense < nLayers) {
    const nExperts = int(c, 'num_experts', 32);
    const topk = int(c, 'num_experts_per_tok', 4);
    rejectIf(nExperts < 1, 'num_experts', 'must be ≥ 1');
    rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
    moe = {
      nExperts, topk,
      inter: int(c, 'moe_intermediate_size', 1792),
      expertBias: bool(c, 'use_expert_bias', true),
      renormalize: bool(c, 'norm_topk_prob', true),
      routedScaling: num(c, 'routed_scaling_factor', 1.0),
    };
  }
  // LLaMA-style RoPE over the whole head; the scaled types would build partial tables for a partial factor.
  rejectPartialScaledRope(c);
  return {
    hidden, nLayers, vocab, attn, eps: num(c, 'norm_eps', 1e-5), convL, convBias: bool(c, 'conv_bias', false),
    layerTypes: types, nDense, denseInter: nDense > 0 ? int(c, 'intermediate_size', 7168) : 0, moe,
    // Lfm2MoeConfig.default_theta: 1e6 where the config gives no rope_theta.
    rope: ropeParams({ rope_theta: 1000000.0, ...c }),
    // Lfm2MoeConfig: a tie_embedding key overrides tie_word_embeddings (default true).
    tieEmbeddings: Boolean(c.tie_embedding ?? c.tie_word_embeddings ?? true),
  };
}

/** The sparse MoE block: sigmoid router (expert_bias for selection), fused experts, no shared expert. */
function lfm2MoeBlock(ctx: Ctx, p: string, hidden: number, m: Lfm2MoeRouting): Ffn {
  const { ws } = ctx;
  const { nExperts: E, topk, inter } = m;
  let bias = 0;
  if (m.expertBias) {
    // The bias buffer sits on the block or on its router module, by transformers release.
    const name = [`${p}.expert_bias`, `${p}.gate.expert_bias`].find((n) => ws.has(n));
    if (!name) throw new ConfigError(`tensors["${p}.expert_bias"]`, 'missing while use_expert_bias is true');
    bias = ws.vec(name, E);
  }
  const routing: RouteOptions = { mode: 'sigmoid', renormalize: m.renormalize, bias: bias || undefined, routedScaling: m.routedScaling };
  return new Moe(ctx, {
    hidden, nExperts: E, topk, inter, act: 'silu', routing,
    router: ws.mat(`${p}.gate.weight`, E, hidden),
    expert: expertWeights(ws, p, E, inter, hidden),
  });
}

export function buildLfm2Moe(ctx: Ctx, c: Lfm2MoeConfig): Net {
  return buildLfm2Net(ctx, c, (i, p) => (i < c.nDense || !c.moe ? lfm2Mlp(ctx, p, c.hidden, c.denseInter) : lfm2MoeBlock(ctx, p, c.hidden, c.moe)));
}

export const lfm2Moe: Family<Lfm2MoeConfig> = {
  types: ['lfm2_moe'],
  keepF32: (name) => name.endsWith('.conv.conv.weight'),
  parse: parseLfm2Moe,
  build: buildLfm2Moe,
};
