// Mistral: Llama with a sliding window on every layer (`sliding_window`, null = full attention).
import type { Family } from './net';
import { buildLlamaLike } from './llama';

export const mistral: Family = {
  types: ['mistral'],
  build: (ctx, c) => buildLlamaLike(ctx, c, {
    qkvBias: () => false,
    oBias: () => false,
    qkNorm: false,
    window: (c) => c.sliding_window ?? 0,
  }),
};
