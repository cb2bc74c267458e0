// Gemma 3 text (Gemma3ForCausalLM, model_type "gemma3_text"): Gemma 2's sandwich-normed decoder plus
// (1 + w) RMSNorm of each head of q and k before RoPE, RoPE parameters per layer type (local layers
// rope_local_base_freq, global layers rope_theta with rope_scaling); no final soft-cap by default and
// no attention soft-cap at all (HF's Gemma3Attention does not apply attn_logit_softcapping).

import type { RopeSpec } from '../layers/attention';
import { ropeSpec } from './common';
import { buildGemmaLike } from './gemma2';
import type { Family } from './net';

/**
 * The RoPE of a layer type. transformers v5 configs carry `rope_parameters` keyed by layer type;
 * older ones give rope_local_base_freq (sliding layers, unscaled) and rope_theta + rope_scaling (full).
 */
function gemma3Rope(c: any, headDim: number, layerType: string): RopeSpec {
  const rp = c.rope_parameters;
  if (rp && typeof rp === 'object' && rp[layerType] && typeof rp[layerType] === 'object') {
    return ropeSpec(c, headDim, headDim, layerType);
  }
  const legacy = layerType === 'sliding_attention'
    ? { rope_theta: c.rope_local_base_freq ?? 10000, rope_scaling: null }
    : { rope_theta: c.rope_theta ?? 1_000_000, rope_scaling: c.rope_scaling ?? null };
  return ropeSpec({ max_position_embeddings: c.max_position_embeddings, ...legacy }, headDim);
}

export const gemma3: Family = {
  types: ['gemma3_text'],
  build: (ctx, c) => buildGemmaLike(ctx, c, {
    qkNorm: true,
    // Gemma3TextConfig: every sliding_window_pattern-th layer is global.
    defaultLayerType: (c, i) => ((i + 1) % (c.sliding_window_pattern ?? 6) ? 'sliding_attention' : 'full_attention'),
    rope: gemma3Rope,
    attnSoftcap: 'unused',
    finalSoftcap: null,
  }),
};
