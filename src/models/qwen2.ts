// Qwen2: Llama with q/k/v biases; sliding window on the layers `layer_types` marks sliding
// (from use_sliding_window and max_window_layers).
import type { Family } from './net';
import { buildLlamaLike, parseLlamaLike, type LlamaConfig } from './llama';
import { slidingWindow } from './shared';

export const qwen2: Family<LlamaConfig> = {
  types: ['qwen2'],
  parse: (c) => parseLlamaLike(c, {
    qkvBias: true,
    oBias: false,
    qkNorm: false,
    window: (types, i) => (types[i] === 'sliding_attention' ? slidingWindow(c) : 0),
  }),
  build: buildLlamaLike,
};
