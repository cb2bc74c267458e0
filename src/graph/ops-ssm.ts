// Ops of the selective state-space mixers (layers/mamba.ts): the causal depthwise conv that keeps its
// window of past inputs in session state, and the Mamba-1 (S6) and Mamba-2 (SSD) scans over the
// session's SSM state. Executors: ./wasm-ssm.ts, src/webgpu/graph-ssm.ts.

import type { Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

export interface SelectiveScanArgs {
  /** [rows, dInner] */
  y: Tensor;
  /** The conv output [rows, dInner]. */
  x: Tensor;
  /** The low-rank time step δ [rows, R]. */
  delta: Tensor;
  /** dt_proj [dInner, R] and its bias (arena pointer of dInner floats): Δ = softplus(δ · W_dtᵀ + b_dt). */
  dtW: Weight;
  dtBias: number;
  /** Arena pointers: A = −exp(A_log) [dInner, N], D [dInner]. */
  A: number;
  D: number;
  /** [rows, N] each. */
  B: Tensor;
  C: Tensor;
  /** Gate [rows, dInner]: y ⊙= SiLU(z). */
  z?: Tensor;
  /** h [dInner, N]. */
  state: RegionSpec;
}

export interface SsdScanArgs {
  /** [rows, H·P] */
  y: Tensor;
  /** The conv output [rows, H·P + 2·G·N]: x, B and C of each row side by side. */
  xbc: Tensor;
  /** The raw time step [rows, H]: Δ = clamp(softplus(dt + dtBias), limit). */
  dt: Tensor;
  /** Arena pointers: dt_bias [H], A = −exp(A_log) [H], D [H]. */
  dtBias: number;
  A: number;
  D: number;
  limit: [number, number];
  /** Gate [rows, H·P]: y ⊙= SiLU(z). */
  z?: Tensor;
  /** h [H, P, N]. */
  state: RegionSpec;
  H: number;
  P: number;
  /** Groups of B and C: head h reads group floor(h / (H / G)). */
  G: number;
  N: number;
}

export const SELECTIVE_SCAN = defineOp<SelectiveScanArgs>('selective_scan', { perSequence: true });
export const SSD_SCAN = defineOp<SsdScanArgs>('ssd_scan', { perSequence: true });

/** Mamba-1: per row h = exp(Δ⊗A) ⊙ h + (Δ⊗B) x;  y = (h C + D x) [⊙ SiLU(z)]. */
export function selectiveScan(g: Graph, a: SelectiveScanArgs): void {
  g.run(SELECTIVE_SCAN, a);
}

/** Mamba-2: per row and head h_h = exp(Δ_h A_h) h_h + Δ_h x_h ⊗ B_g;  y_h = h_h C_g + D_h x_h [⊙ SiLU(z)]. */
export function ssdScan(g: Graph, a: SsdScanArgs): void {
  g.run(SSD_SCAN, a);
}
