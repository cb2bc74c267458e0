// Qwen3-MoE: Qwen3 attention (per-head RMSNorm of q and k before RoPE, optional attention_bias) and
// a sparse MoE with softmax top-k routing renormalised when norm_topk_prob; no shared expert.
// The sliding window, when use_sliding_window, applies to every layer (Qwen3MoeAttention).

import { bool, int, num } from './common';
import { buildMoeLike, parseMoeLike, type MoeLikeConfig } from './mixtral';
import type { Family } from './net';
import { expertCount, qwenSparseLayers } from './shared';

export const qwen3Moe: Family<MoeLikeConfig> = {
  types: ['qwen3_moe'],
  parse: (c) => {
    const nExperts = expertCount(c, 128);
    const window = bool(c, 'use_sliding_window', false) ? int(c, 'sliding_window', 4096) : 0;
    const bias = bool(c, 'attention_bias', false);
    const eps = num(c, 'rms_norm_eps', 1e-6);
    return parseMoeLike(c, {
      nExperts,
      topk: int(c, 'num_experts_per_tok', 8),
      expertInter: int(c, 'moe_intermediate_size', 768),
      renormalize: bool(c, 'norm_topk_prob', false),
      qkvBias: bias,
      oBias: bias,
      qkNorm: { eps, addOne: false },
      windows: (n) => new Array<number>(n).fill(window),
      sparse: (n) => qwenSparseLayers(c, n, nExperts),
      rmsEps: eps,
    });
  },
  build: buildMoeLike,
};
