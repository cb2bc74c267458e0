// Qwen3: Llama with per-head RMSNorm on q and k before RoPE; optional attention_bias.
import type { Family } from './net';
import { bool } from './common';
import { buildLlamaLike, parseLlamaLike, type LlamaConfig } from './llama';
import { slidingWindow } from './shared';

export const qwen3: Family<LlamaConfig> = {
  types: ['qwen3'],
  parse: (c) => {
    const bias = bool(c, 'attention_bias', false);
    return parseLlamaLike(c, {
      qkvBias: bias,
      oBias: bias,
      qkNorm: true,
      window: (types, i) => (types[i] === 'sliding_attention' ? slidingWindow(c) : 0),
    });
  },
  build: buildLlamaLike,
};
