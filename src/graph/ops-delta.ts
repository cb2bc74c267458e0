// Ops of the Gated DeltaNet mixer (Qwen3-Next): the causal conv with SiLU over the packed q, k, v
// channels, the per-head decay and write gates, the gated delta rule over the pass's tokens, and
// the gated RMSNorm of its output. State lives in `fixed` regions the layer declares.

import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

/** Head layout of a gated delta rule: Hv value heads, value head h reading key head h / (Hv/Hk). */
export interface DeltaHeads {
  Hk: number;
  Hv: number;
  /** Key (and query) head size. */
  dk: number;
  /** Value head size. */
  dv: number;
}

export interface DeltaRuleArgs extends DeltaHeads {
  /** Output o [rows, Hv·dv]. */
  y: Tensor;
  /** Packed rows [q (Hk·dk) | k (Hk·dk) | v (Hv·dv)], read only. */
  qkv: Tensor;
  /** Log-decay g [rows, Hv] (per key channel, [rows, Hv·dk], with perChannel) and write strength β [rows, Hv]. */
  g: Tensor;
  beta: Tensor;
  /** Per value head state S [Hv, dk, dv]. */
  state: RegionSpec;
  /** Multiplies q (1/√dk). */
  scale: number;
  /** Kimi Delta Attention: one log-decay per key channel, S ← Diag(exp(g)) S. */
  perChannel?: boolean;
}

/** x ← SiLU(conv1d(x)) in place (taps w [C, W], no bias); `state` [C, W−1] holds the previous inputs, oldest first. */
/** From ba [rows, 2H] = [b | a]: β = σ(b), g = −exp(A_log)·softplus(a + dt_bias) (softplus threshold 20). */
export const DELTA_GATES = defineOp<{ g: Tensor; beta: Tensor; ba: Tensor; aLog: number; dtBias: number }>('delta_gates');
/** The gated delta rule over the pass's tokens, state S carried in `state` (see gatedDeltaRule). */
export const DELTA_RULE = defineOp<DeltaRuleArgs>('gated_delta_rule', { perSequence: true });
/**
 * KDA forget gate in place on f [rows, H·dk]: g = −exp(A_log[h])·softplus(f + dt_bias) (softplus
 * threshold 20), A_log one per head, dt_bias one per channel.
 */
export const KDA_GATES = defineOp<{ g: Tensor; aLog: number; dtBias: number; dk: number }>('kda_gates');
/** y = RMSNorm(x)·w ⊙ SiLU(z) over every `dim` floats of each row (y may equal x, not z). */
export const GATED_RMS_NORM = defineOp<{ y: Tensor; x: Tensor; z: Tensor; w: number; dim: number; eps: number }>('gated_rms_norm');

/** The decay g and write strength β of each value head (aLog, dtBias: arena vectors of H floats). */
export function deltaGates(g: Graph, gate: Tensor, beta: Tensor, ba: Tensor, o: { aLog: number; dtBias: number }): void {
  g.run(DELTA_GATES, { g: gate, beta, ba, ...o });
}

/**
 * The gated delta rule over the pass's tokens, per value head h with q, k l2-normalised (eps 1e-6):
 *   S ← exp(g) S  (perChannel: Diag(exp(g)) S);  S ← S + k (β (v − Sᵀk))ᵀ;  o = Sᵀ (q · scale).
 */
export function gatedDeltaRule(g: Graph, y: Tensor, qkv: Tensor, gate: Tensor, beta: Tensor, o: DeltaHeads & { state: RegionSpec; scale: number; perChannel?: boolean }): void {
  g.run(DELTA_RULE, { y, qkv, g: gate, beta, ...o });
}

/** The per-channel log-decay of Kimi Delta Attention, in place on g (aLog: H floats, dtBias: H·dk floats). */
export function kdaGates(g: Graph, gate: Tensor, o: { aLog: number; dtBias: number; dk: number }): void {
  g.run(KDA_GATES, { g: gate, ...o });
}

/** y = RMSNorm(x) · w ⊙ SiLU(z), normalised per `dim` floats (w: arena vector of dim floats; y may equal x). */
export function gatedRmsNorm(g: Graph, y: Tensor, x: Tensor, z: Tensor, o: { w: number; dim: number; eps: number }): void {
  g.run(GATED_RMS_NORM, { y, x, z, ...o });
}
