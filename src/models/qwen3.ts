// Qwen3: Llama with per-head RMSNorm on q and k before RoPE; optional attention_bias.
import type { Family } from './net';
import { bool } from './common';
import { buildLlamaLike } from './llama';

export const qwen3: Family = {
  types: ['qwen3'],
  build: (ctx, c) => buildLlamaLike(ctx, c, {
    qkvBias: (c) => bool(c, 'attention_bias', false),
    oBias: (c) => bool(c, 'attention_bias', false),
    qkNorm: true,
    window: (c, types, i) => (types[i] === 'sliding_attention' ? c.sliding_window ?? 0 : 0),
  }),
};
