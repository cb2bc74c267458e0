// Ops of the recurrent layers: RWKV-4 (token shift, WKV) and RecurrentGemma (causal depthwise conv
// with state, RG-LRU), plus the in-place activations they use. Recurrences run over the pass's
// tokens in order, carrying their state in a `fixed` region; those that restart at position 0 do so
// inside the op (the executor knows the positions, family code does not).

import type { Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

/** The gates of an RG-LRU layer (HF RecurrentGemmaRglru). */
export interface RglruSpec {
  /** lru_width */
  W: number;
  /** Heads: blocks of the block-diagonal gates. */
  H: number;
  /** Per head, the input / recurrence gate blocks [W/H, W/H] in Linear layout, f32, head after head in the arena. */
  gateI: Weight[];
  gateA: Weight[];
  /** Arena pointers of the gate biases [W]. */
  bI: number;
  bA: number;
  /** −8·softplus(Λ) [W]: log a = r ⊙ this. */
  logABase: Float32Array;
}

/** RWKV token shift: ys[j][t] = x[t]·μ_j + x[t−1]·(1 − μ_j), x[−1] from `state` [D], which then takes the last row of x. */
export const TOKEN_SHIFT = defineOp<{ ys: Tensor[]; x: Tensor; state: RegionSpec; mixes: Float32Array[] }>('token_shift', { perSequence: true });
/** RWKV-4 WKV over the pass's tokens; state [3, C] = (num, den, max), restarted at position 0. */
export const WKV4 = defineOp<{ y: Tensor; k: Tensor; v: Tensor; state: RegionSpec; decay: number; first: number }>('wkv4', { perSequence: true });
/** Causal depthwise conv1d (taps w [C, width], bias or 0, optional SiLU) with the width−1 previous inputs in `state` [C, width−1]. */
/** RG-LRU: gates from x, the recurrence h (state [W], restarted at position 0), y = h ⊙ gate. */
export const RGLRU = defineOp<{ y: Tensor; x: Tensor; gate: Tensor; h: RegionSpec; spec: RglruSpec }>('rglru', { perSequence: true });
/** An activation in place: relu(x)² or GeLU (tanh approximation). */
export const REC_ACT = defineOp<{ x: Tensor; act: 'relu2' | 'gelu_tanh' }>('rec_act');

/** ys[j] = lerp(previous token of x, x, mixes[j]) for each j; the shift state takes x's last row. */
export function tokenShift(g: Graph, ys: Tensor[], x: Tensor, state: RegionSpec, mixes: Float32Array[]): void {
  g.run(TOKEN_SHIFT, { ys, x, state, mixes });
}

/** y = WKV(k, v) with per-channel decay and bonus (arena vectors; the raw time_decay, time_first). */
export function wkv4(g: Graph, y: Tensor, k: Tensor, v: Tensor, state: RegionSpec, decay: number, first: number): void {
  g.run(WKV4, { y, k, v, state, decay, first });
}

/** y = RG-LRU(x) ⊙ gate, the hidden state in `h`. */
export function rglru(g: Graph, y: Tensor, x: Tensor, gate: Tensor, h: RegionSpec, spec: RglruSpec): void {
  g.run(RGLRU, { y, x, gate, h, spec });
}

/** x = relu(x)² */
export function relu2(g: Graph, x: Tensor): void {
  g.run(REC_ACT, { x, act: 'relu2' });
}

/** x = GeLU_tanh(x) */
export function geluTanh(g: Graph, x: Tensor): void {
  g.run(REC_ACT, { x, act: 'gelu_tanh' });
}
