// Ops of MiniMax-01's lightning attention (a decayed linear-attention state per head). LFM2's short
// convolution uses the core causalConv (ops.ts).

import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

export interface LightningArgs {
  /** Output o [rows, H·d]. */
  y: Tensor;
  /** Packed projections [rows, H·3d]: per head [q (d) | k (d) | v (d)]. */
  qkv: Tensor;
  /** Per-head state S [H, d, d]. */
  state: RegionSpec;
  /** Arena pointer of the per-head decay rates s_h, f32[H]. */
  slopes: number;
  H: number;
  d: number;
  /** HF block_size of the block-wise prefill. */
  blockSize: number;
}

export const LIGHTNING = defineOp<LightningArgs>('lightning_attention', { perSequence: true });

/** Lightning attention, per head h: S ← exp(−s_h)·S + k vᵀ, o = Sᵀ q (no scale), over the pass's tokens. */
export function lightningAttention(g: Graph, y: Tensor, qkv: Tensor, o: { state: RegionSpec; slopes: number; H: number; d: number; blockSize: number }): void {
  g.run(LIGHTNING, { y, qkv, ...o });
}
