// Mistral: Llama with a sliding window on every layer (`sliding_window`, null = full attention).
import type { Family } from './net';
import { buildLlamaLike, parseLlamaLike, type LlamaConfig } from './llama';
import { slidingWindow } from './shared';

export const mistral: Family<LlamaConfig> = {
  types: ['mistral'],
  parse: (c) => {
    const window = slidingWindow(c);
    return parseLlamaLike(c, { qkvBias: false, oBias: false, qkNorm: false, window: () => window });
  },
  build: buildLlamaLike,
};
