// Qwen2: Llama with q/k/v biases; sliding window on the layers `layer_types` marks sliding
// (from use_sliding_window and max_window_layers).
import type { Family } from './net';
import { buildLlamaLike } from './llama';

export const qwen2: Family = {
  types: ['qwen2'],
  build: (ctx, c) => buildLlamaLike(ctx, c, {
    qkvBias: () => true,
    oBias: () => false,
    qkNorm: false,
    window: (c, types, i) => (types[i] === 'sliding_attention' ? c.sliding_window ?? 0 : 0),
  }),
};
