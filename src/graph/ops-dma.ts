// Dynamic mask attention (Doge): causal softmax attention whose scores carry a learned additive
// bias per key and KV head, computed from a value projection cached with the keys:
//   b[j, g] = exp(A[g] · softplus(dt[j, g]))
//   s[j]    = scale · q·k[j] + b[j, g]     for the visible keys j (causal, optional sliding window)
// and, when more than `keep` keys are visible, only the `keep` of them with the largest b[j, g]
// take part (ties: the lower position). dt[j] (nKv floats per position) is cached like the keys,
// in its own region, by kvAppend.

import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

export interface DmaAttentionArgs {
  /** Output [rows, nHeads·vDim]. */
  y: Tensor;
  /** Queries [rows, nHeads·headDim]. */
  q: Tensor;
  /** f32 caches: keys [nKv·headDim], values [nKv·vDim] and dt [nKv] per position. */
  k: RegionSpec;
  v: RegionSpec;
  dt: RegionSpec;
  /** Arena pointer of A, f32[nKv]. */
  A: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  /** Sliding window W: a query at p sees keys at positions > p − W (0: none). */
  window: number;
  /** keep_window_size: most keys a query attends to (0: no limit). */
  keep: number;
}

export const DMA_ATTENTION = defineOp<DmaAttentionArgs>('dma_attention', { perSequence: true });

export function dmaAttention(g: Graph, a: DmaAttentionArgs): void {
  g.run(DMA_ATTENTION, a);
}

/** y = x ⊙ w on every row, w an arena vector of x.width floats (Doge's learned residual weights); y may equal x. */
export const MUL_ROW = defineOp<{ y: Tensor; x: Tensor; w: number }>('mul_row');

export function mulRow(g: Graph, y: Tensor, x: Tensor, w: number): void {
  g.run(MUL_ROW, { y, x, w });
}
