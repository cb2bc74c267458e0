// Qwen2-MoE (Qwen1.5-MoE): Qwen2 attention (q/k/v biases per qkv_bias, sliding window on the layers
// `layer_types` marks when use_sliding_window) and a sparse MoE with softmax top-k routing
// (renormalised when norm_topk_prob) plus a shared expert gated by sigmoid(shared_expert_gate · x).
// decoder_sparse_step and mlp_only_layers choose dense layers.

import { bool, int, num } from './common';
import { buildMoeLike, parseMoeLike, type MoeLikeConfig } from './mixtral';
import type { Family } from './net';
import { expertCount, qwenSparseLayers, slidingByType } from './shared';

export const qwen2Moe: Family<MoeLikeConfig> = {
  types: ['qwen2_moe'],
  parse: (c) => {
    const nExperts = expertCount(c, 60);
    // Qwen2MoeConfig: sliding_window only counts when use_sliding_window.
    const window = bool(c, 'use_sliding_window', false) ? int(c, 'sliding_window', 4096) : 0;
    const qkvBias = bool(c, 'qkv_bias', true);
    return parseMoeLike(c, {
      nExperts,
      topk: int(c, 'num_experts_per_tok', 4),
      expertInter: int(c, 'moe_intermediate_size', 1408),
      renormalize: bool(c, 'norm_topk_prob', false),
      qkvBias,
      oBias: false,
      qkNorm: null,
      windows: (n) => slidingByType(c, n, window),
      sparse: (n) => qwenSparseLayers(c, n, nExperts),
      sharedInter: int(c, 'shared_expert_intermediate_size', 5632),
      rmsEps: num(c, 'rms_norm_eps', 1e-6),
    });
  },
  build: buildMoeLike,
};
