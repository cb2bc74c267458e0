// Ops of the RWKV-7 time mix: the key preparation (κ̂ and the a-scaled key), the WKV-7 recurrence
// over the pass's tokens (state in a `fixed` region the layer declares) and the output head (per-head
// GroupNorm, the r·k bonus, the output gate). Heads are contiguous blocks of dk (keys) or dv
// (values) floats in each row.

import type { KappaNorm } from '../kernels/rwkv7';
import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

export type { KappaNorm };

export interface Rwkv7Heads {
  H: number;
  /** Key head size (r, w, k, κ̂, a). */
  dk: number;
  /** Value head size (v and the output). */
  dv: number;
}

export interface Wkv7Args extends Rwkv7Heads {
  /** Output [rows, H·dv]. */
  y: Tensor;
  /** [rows, H·dk] each: receptance, log-decay, key, κ̂, in-context learning rate a. */
  r: Tensor;
  w: Tensor;
  k: Tensor;
  kappa: Tensor;
  a: Tensor;
  /** [rows, H·dv] */
  v: Tensor;
  /** The state S [H, dk, dv]. */
  state: RegionSpec;
}

export interface Rwkv7KeysArgs {
  /** κ̂ out [rows, H·dk]. */
  kappa: Tensor;
  /** The key, updated in place, and a, both [rows, H·dk]. */
  k: Tensor;
  a: Tensor;
  /** Arena vectors [H·dk]: k_k, k_a. */
  kK: number;
  kA: number;
  dk: number;
  norm: KappaNorm;
}

export interface Rwkv7OutputArgs extends Rwkv7Heads {
  /** The WKV output, turned into the gated head output in place [rows, H·dv]. */
  y: Tensor;
  r: Tensor;
  k: Tensor;
  v: Tensor;
  g: Tensor;
  /** Arena vectors: r_k [H·dk], the GroupNorm weight and bias [H·dv]. */
  rK: number;
  normW: number;
  normB: number;
  eps: number;
}

export const RWKV7_KEYS = defineOp<Rwkv7KeysArgs>('rwkv7_keys');
export const WKV7 = defineOp<Wkv7Args>('wkv7', { perSequence: true });
export const RWKV7_OUTPUT = defineOp<Rwkv7OutputArgs>('rwkv7_output');

/** κ̂ = normalize(k ⊙ k_k) per head; then k ← k + (k ⊙ (a − 1)) ⊙ k_a in place. */
export function rwkv7Keys(g: Graph, kappa: Tensor, k: Tensor, a: Tensor, o: { kK: number; kA: number; dk: number; norm: KappaNorm }): void {
  g.run(RWKV7_KEYS, { kappa, k, a, ...o });
}

/**
 * The WKV-7 recurrence over the pass's tokens, per head (S [dk, dv] in `state`):
 *   u = Sᵀκ̂;  S ← Diag(exp(w)) S − (κ̂ ⊙ a) uᵀ + k vᵀ;  y = Sᵀ r.
 */
export function wkv7(g: Graph, y: Tensor, x: { r: Tensor; w: Tensor; k: Tensor; v: Tensor; kappa: Tensor; a: Tensor }, o: Rwkv7Heads & { state: RegionSpec }): void {
  g.run(WKV7, { y, ...x, ...o });
}

/** y ← (GroupNorm_H(y)·w + b + (Σ_head r ⊙ k ⊙ r_k)·v) ⊙ g. */
export function rwkv7Output(g: Graph, y: Tensor, x: { r: Tensor; k: Tensor; v: Tensor; g: Tensor }, o: Rwkv7Heads & { rK: number; normW: number; normB: number; eps: number }): void {
  g.run(RWKV7_OUTPUT, { y, ...x, ...o });
}
