// OLMoE: Llama-shaped decoder with RMSNorm of q and k over the whole projection width (weights
// [hidden] and [nKv·headDim], not per head), optional clip_qkv clamping of q, k, v after those norms,
// and a sparse MoE whose softmax top-k weights are renormalised only when norm_topk_prob is set.

import { num, int, bool, rejectIf } from './common';
import { buildMoeLike, parseMoeLike, type MoeLikeConfig } from './mixtral';
import type { Family } from './net';
import { expertCount } from './shared';

export const olmoe: Family<MoeLikeConfig> = {
  types: ['olmoe'],
  parse: (c) => {
    const eps = num(c, 'rms_norm_eps', 1e-5);
    const clip = c.clip_qkv == null ? undefined : num(c, 'clip_qkv');
    if (clip !== undefined) rejectIf(!(clip > 0), 'clip_qkv', `must be > 0 or null, got ${clip}`);
    const hidden = int(c, 'hidden_size'), nHeads = int(c, 'num_attention_heads');
    // HF sizes q_norm by hidden_size and k_norm by (hidden/heads)·nKv: both assume head_dim = hidden/heads.
    rejectIf(c.head_dim != null && (c.head_dim as number) * nHeads !== hidden, 'head_dim', `OLMoE's q/k norms need head_dim · num_attention_heads = hidden_size (${hidden})`);
    const attnBias = bool(c, 'attention_bias', false);
    return parseMoeLike(c, {
      nExperts: expertCount(c, 64),
      topk: int(c, 'num_experts_per_tok', 8),
      expertInter: int(c, 'intermediate_size'),
      renormalize: bool(c, 'norm_topk_prob', false),
      qkvBias: attnBias,
      oBias: attnBias,
      qkNorm: { eps, addOne: false, full: true },
      clip,
      // OlmoeModel builds a plain causal mask: no sliding window whatever the config says.
      windows: (n) => new Array<number>(n).fill(0),
      sparse: (n) => new Array<boolean>(n).fill(true),
      rmsEps: eps,
    });
  },
  build: buildMoeLike,
};
