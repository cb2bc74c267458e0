// Ops of the xLSTM mLSTM layer: the matrix-memory recurrence with exponential gating over the pass's
// tokens (state C, n, m in one `fixed` region the layer declares) and its output head (per-head
// LayerNorm with a full-width weight and bias, times the sigmoid output gate). Heads are contiguous
// blocks of dk (queries, keys) or dv (values, outputs) floats in each row.

import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

export { mlstmStateFloats } from '../kernels/mlstm';

export interface MlstmHeads {
  H: number;
  /** Query/key head size. */
  dk: number;
  /** Value head size. */
  dv: number;
}

export interface MlstmArgs extends MlstmHeads {
  /** Output h [rows, H·dv]. */
  y: Tensor;
  /** [rows, H·dk] each. */
  q: Tensor;
  k: Tensor;
  /** [rows, H·dv] */
  v: Tensor;
  /** Input and forget gate preactivations [rows, H]. */
  i: Tensor;
  f: Tensor;
  /** Denominator eps (HF config.eps). */
  eps: number;
  /** The state [C (H·dk·dv) | n (H·dk) | m (H)] (mlstmStateFloats). */
  state: RegionSpec;
}

export interface MlstmOutputArgs {
  /** The recurrence's output, turned into the gated head output in place [rows, H·dv]. */
  y: Tensor;
  /** Output gate preactivation [rows, H·dv]. */
  o: Tensor;
  /** Arena vectors [H·dv]: the norm weight, and its bias (0: none). */
  w: number;
  b: number;
  H: number;
  dv: number;
  eps: number;
}

export const MLSTM = defineOp<MlstmArgs>('mlstm', { perSequence: true });
export const MLSTM_OUTPUT = defineOp<MlstmOutputArgs>('mlstm_output');

/**
 * The mLSTM recurrence over the pass's tokens, per head (q̃ = q·dk^−½):
 *   m' = max(log σ(f) + m, i);  C ← e^{log σ(f) + m − m'} C + e^{i − m'} k vᵀ  (n likewise with k);  m ← m'
 *   y = q̃ᵀC / (max(|q̃·n|, e^{−m'}) + eps)
 */
export function mlstm(g: Graph, y: Tensor, x: { q: Tensor; k: Tensor; v: Tensor; i: Tensor; f: Tensor }, o: MlstmHeads & { eps: number; state: RegionSpec }): void {
  g.run(MLSTM, { y, ...x, ...o });
}

/** y ← σ(o) ⊙ (LayerNorm_head(y)·w + b), the norm over each head's dv values. */
export function mlstmOutput(g: Graph, y: Tensor, o: Tensor, n: { w: number; b: number; H: number; dv: number; eps: number }): void {
  g.run(MLSTM_OUTPUT, { y, o, ...n });
}
