// Gemma 3 text (Gemma3ForCausalLM, model_type "gemma3_text"): Gemma 2's sandwich-normed decoder plus
// (1 + w) RMSNorm of each head of q and k before RoPE, RoPE parameters per layer type (local layers
// rope_local_base_freq, global layers rope_theta with rope_scaling); no final soft-cap by default and
// no attention soft-cap at all (HF's Gemma3Attention does not apply attn_logit_softcapping).

import { int, ropeParams, type RawConfig, type RopeParams } from './common';
import { buildGemmaLike, parseGemmaLike, type GemmaConfig, type GemmaLayerType } from './gemma2';
import type { Family } from './net';

/**
 * The RoPE of a layer type. transformers v5 configs carry `rope_parameters` keyed by layer type;
 * older ones give rope_local_base_freq (sliding layers, unscaled) and rope_theta + rope_scaling (full).
 */
function gemma3Rope(c: RawConfig, layerType: GemmaLayerType): RopeParams {
  const rp = c.rope_parameters as RawConfig | null | undefined;
  if (rp && typeof rp === 'object' && rp[layerType] && typeof rp[layerType] === 'object') {
    return ropeParams(c, layerType);
  }
  const legacy = layerType === 'sliding_attention'
    ? { rope_theta: c.rope_local_base_freq ?? 10000, rope_scaling: null }
    : { rope_theta: c.rope_theta ?? 1_000_000, rope_scaling: c.rope_scaling ?? null };
  return ropeParams({ max_position_embeddings: c.max_position_embeddings, ...legacy });
}

export const gemma3: Family<GemmaConfig> = {
  types: ['gemma3_text'],
  parse: (c) => parseGemmaLike(c, {
    qkNorm: true,
    // Gemma3TextConfig: every sliding_window_pattern-th layer is global.
    defaultLayerType: (i) => ((i + 1) % int(c, 'sliding_window_pattern', 6) ? 'sliding_attention' : 'full_attention'),
    rope: (t) => gemma3Rope(c, t),
    attnSoftcap: 'unused',
    finalSoftcap: null,
  }),
  build: buildGemmaLike,
};
