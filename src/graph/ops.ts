// The core ops of the model description (graph.ts), with the functions family code calls. Every op
// writes into a destination tensor the caller allocated (y may equal an input where noted), over all
// rows of its tensors; executors implement each op (src/graph/wasm-ops.ts, src/webgpu/graph-ops.ts).

import type { RouteOptions } from '../kernels/moe';
import type { Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';

/** Activations of gated feed-forward layers: y = act(gate) ⊙ up. */
export type GatedAct = 'silu' | 'gelu_tanh' | 'gelu' | 'relu2' | 'clamped_swiglu';

export interface RopeSpec {
  invFreq: Float32Array;
  rotaryDim: number;
  style: 'neox' | 'interleaved';
  attentionFactor: number;
}

export interface NormSpec {
  /** Arena pointer of the weight (0: none). */
  w: number;
  b?: number;
  eps: number;
  kind?: 'rms' | 'layer';
  /** Gemma / Qwen3-Next zero-centred RMSNorm: x̂ · (1 + w). */
  addOne?: boolean;
}

export interface GatedWeights {
  gate: Weight;
  up: Weight;
  down: Weight;
  gateBias?: number;
  upBias?: number;
  downBias?: number;
}

export interface MoeSpec {
  /** The layer's name in errors. */
  name: string;
  hidden: number;
  nExperts: number;
  topk: number;
  inter: number;
  act: GatedAct;
  /** clamped_swiglu (gpt-oss): gate·σ(α·gate) with gate ≤ limit, up clamped to ±limit, then (up + 1)·. */
  alpha?: number;
  limit?: number;
  routing: RouteOptions;
  router: Weight;
  routerBias?: number;
  expert: (e: number) => GatedWeights;
  shared?: { w: GatedWeights; act: GatedAct; gate?: Weight };
  /** Expert runs per expert (WASM; tests assert unselected experts are never touched). */
  calls?: Int32Array;
  /** Pointer to f32[E]: each routing weight times its expert's scale, after top-k and renormalisation. */
  expertScale?: number;
  /**
   * Non-gated experts (Nemotron-H): each expert is down(act(up·x + b_u)) + b_d, act 'relu2' or 'silu';
   * `gate` of the expert weights is not read.
   */
  ungated?: boolean;
}

export interface AttentionArgs {
  y: Tensor;
  /** Queries [rows, nHeads·headDim]. */
  q: Tensor;
  k: RegionSpec;
  v: RegionSpec;
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  window?: number;
  softcap?: number;
  /** Arena pointer of nHeads sink logits (gpt-oss). */
  sinks?: number;
  /** Sparse top-k attention at decode (load option attention, runtime/attention-mode.ts); absent: dense. */
  pages?: AttentionPages;
  /**
   * Every query of the pass sees the keys up to the pass's last position (not only up to its own):
   * bidirectional attention over the pass's tokens and what precedes them; with `window`, the keys
   * after pos0 − window (the window counted back from the pass's first position). Dense only.
   */
  bidirectional?: boolean;
}

/**
 * Quest-style pages of a linear key cache: the op keeps each page's key bounds as positions are
 * appended (every pass), and a decode step (a one-token pass that is not part of a prompt: the
 * executors' prompt flag) whose context exceeds sinks + window + pages·pageSize
 * attends only the first `sinks` positions, the last `window` and the top `pages` pages between them
 * (per kv head, scored Σ_d max(q_d·min_d, q_d·max_d) summed over the head's query group).
 */
export interface AttentionPages {
  /** f32 [2, maxPages, nKv, headDim]: per page and kv head the element-wise key minimum, then maximum. */
  bounds: RegionSpec;
  /** Pages the bounds region holds (⌈maxContext / pageSize⌉). */
  maxPages: number;
  /** The pass's keys as appended [rows, nKv·headDim], f32 (before a quantized cache rounds them). */
  keys: Tensor;
  pageSize: number;
  pages: number;
  sinks: number;
  window: number;
}

export const EMBED = defineOp<{ y: Tensor; table: Weight; scale: number }>('embed');
export const MATMUL = defineOp<{ y: Tensor; x: Tensor; w: Weight }>('matmul');
export const ADD_ROW = defineOp<{ y: Tensor; bias: number }>('add_row');
export const BINARY = defineOp<{ op: 'add' | 'mul' | 'mul_sigmoid'; y: Tensor; a: Tensor; b: Tensor }>('binary');
export const UNARY = defineOp<{ op: 'scale' | 'softcap' | 'sigmoid' | 'silu' | 'clamp' | 'relu2'; y: Tensor; x: Tensor; s: number }>('unary');
/** y[t, i] *= v[i]: every row times an arena vector of y.width floats. */
export const MUL_ROW = defineOp<{ y: Tensor; v: number }>('mul_row');
export const NORM = defineOp<{ y: Tensor; x: Tensor; n: NormSpec; dim: number }>('norm');
export const GATED_ACT = defineOp<{ y: Tensor; gate: Tensor; up: Tensor; act: GatedAct; alpha?: number; limit?: number }>('gated_act');
export const COPY = defineOp<{ y: Tensor; x: Tensor; chunks: number; len: number; xOff: number; xStride: number; yOff: number; yStride: number }>('copy');
export const ROPE = defineOp<{ x: Tensor; nHeads: number; headDim: number; rope: RopeSpec }>('rope');
export const KV_APPEND = defineOp<{ cache: RegionSpec; x: Tensor }>('kv_append', { perSequence: true });
export const ATTENTION = defineOp<AttentionArgs>('attention', { perSequence: true });
/** `route`: the rows the router reads, when they differ from the experts' input x. */
export const MOE = defineOp<{ y: Tensor; x: Tensor; spec: MoeSpec; route?: Tensor }>('moe');
export const CAUSAL_CONV = defineOp<CausalConvArgs>('causal_conv', { perSequence: true });

export interface CausalConvArgs {
  /** [rows, C]; may equal x. */
  y: Tensor;
  x: Tensor;
  /** Arena pointer of the f32 taps [C, W] (HF Conv1d weight [C, 1, W]). */
  w: number;
  /** Arena pointer of the bias [C] (0: none). */
  bias: number;
  /** The W−1 inputs before the pass, per channel [C, W−1], oldest first; holds the last W−1 after. */
  state: RegionSpec;
  /** Kernel width (2, 3 or 4). */
  W: number;
  act: 'silu' | 'none';
}

export function embed(g: Graph, y: Tensor, table: Weight, scale = 1): void {
  g.run(EMBED, { y, table, scale });
}
/** y[rows, w.rows] = x[rows, w.cols] · wᵀ */
export function matmul(g: Graph, y: Tensor, x: Tensor, w: Weight): void {
  g.run(MATMUL, { y, x, w });
}
/** y += bias (an arena vector of y.width floats) on every row; no-op for pointer 0. */
export function addBias(g: Graph, y: Tensor, bias: number | undefined): void {
  if (bias) g.run(ADD_ROW, { y, bias });
}
/** y = x · wᵀ + bias */
export function linear(g: Graph, y: Tensor, x: Tensor, w: Weight, bias?: number): void {
  matmul(g, y, x, w);
  addBias(g, y, bias);
}
export function add(g: Graph, y: Tensor, a: Tensor, b: Tensor): void {
  g.run(BINARY, { op: 'add', y, a, b });
}
export function mul(g: Graph, y: Tensor, a: Tensor, b: Tensor): void {
  g.run(BINARY, { op: 'mul', y, a, b });
}
/** y = a ⊙ σ(b) */
export function mulSigmoid(g: Graph, y: Tensor, a: Tensor, b: Tensor): void {
  g.run(BINARY, { op: 'mul_sigmoid', y, a, b });
}
export function scale(g: Graph, y: Tensor, x: Tensor, s: number): void {
  g.run(UNARY, { op: 'scale', y, x, s });
}
/** y = cap · tanh(x / cap) */
export function softcap(g: Graph, y: Tensor, x: Tensor, cap: number): void {
  g.run(UNARY, { op: 'softcap', y, x, s: cap });
}
export function sigmoid(g: Graph, y: Tensor, x: Tensor): void {
  g.run(UNARY, { op: 'sigmoid', y, x, s: 0 });
}
export function silu(g: Graph, y: Tensor, x: Tensor): void {
  g.run(UNARY, { op: 'silu', y, x, s: 0 });
}
/** y = max(x, 0)² */
export function relu2(g: Graph, y: Tensor, x: Tensor): void {
  g.run(UNARY, { op: 'relu2', y, x, s: 0 });
}
/** y ⊙= v on every row (v: arena pointer of y.width floats, e.g. a norm weight after a per-group norm). */
export function mulRow(g: Graph, y: Tensor, v: number): void {
  g.run(MUL_ROW, { y, v });
}
/** y = min(max(x, −lim), lim) */
export function clamp(g: Graph, y: Tensor, x: Tensor, lim: number): void {
  g.run(UNARY, { op: 'clamp', y, x, s: lim });
}
/** RMSNorm / LayerNorm of every `dim` floats of each row (dim = width: whole rows; headDim: per head). */
export function norm(g: Graph, n: NormSpec, y: Tensor, x: Tensor, dim = x.width): void {
  g.run(NORM, { y, x, n, dim });
}
export function gatedAct(g: Graph, y: Tensor, gate: Tensor, up: Tensor, act: GatedAct, o: { alpha?: number; limit?: number } = {}): void {
  g.run(GATED_ACT, { y, gate, up, act, ...o });
}
/** Per row: `chunks` runs of `len` floats, x[xOff + c·xStride …] → y[yOff + c·yStride …]. */
export function copy(g: Graph, y: Tensor, x: Tensor, o: { chunks: number; len: number; xOff?: number; xStride?: number; yOff?: number; yStride?: number }): void {
  g.run(COPY, { y, x, chunks: o.chunks, len: o.len, xOff: o.xOff ?? 0, xStride: o.xStride ?? o.len, yOff: o.yOff ?? 0, yStride: o.yStride ?? o.len });
}
/** RoPE in place on the heads of x at the pass's positions. */
export function rope(g: Graph, x: Tensor, nHeads: number, headDim: number, r: RopeSpec): void {
  g.run(ROPE, { x, nHeads, headDim, rope: r });
}
/** Stores the rows of x in a position-indexed cache region at the pass's positions. */
export function kvAppend(g: Graph, cache: RegionSpec, x: Tensor): void {
  g.run(KV_APPEND, { cache, x });
}
/** Causal softmax attention of the pass's queries over the cached keys and values up to their positions. */
export function attention(g: Graph, a: AttentionArgs): void {
  g.run(ATTENTION, a);
}
export function moe(g: Graph, y: Tensor, x: Tensor, spec: MoeSpec, route?: Tensor): void {
  g.run(MOE, route ? { y, x, spec, route } : { y, x, spec });
}

/**
 * Causal depthwise conv: y[t, c] = act(bias[c] + Σ_j w[c, j] · in[t − (W−1) + j, c]), the inputs
 * before the pass's first token coming from `state` (Mamba, LFM2, RG-LRU, gated DeltaNet).
 */
export function causalConv(g: Graph, y: Tensor, x: Tensor, o: { w: number; bias?: number; state: RegionSpec; W: number; act: 'silu' | 'none' }): void {
  g.run(CAUSAL_CONV, { y, x, w: o.w, bias: o.bias ?? 0, state: o.state, W: o.W, act: o.act });
}

/** y = down(act(gate·x + b_g) ⊙ (up·x + b_u)) + b_d */
export function gatedFfn(g: Graph, w: GatedWeights, act: GatedAct, x: Tensor, y: Tensor, o: { alpha?: number; limit?: number } = {}): void {
  const I = w.gate.rows;
  const gt = g.tmp(I, x.rows), up = g.tmp(I, x.rows);
  linear(g, gt, x, w.gate, w.gateBias);
  linear(g, up, x, w.up, w.upBias);
  gatedAct(g, gt, gt, up, act, o);
  linear(g, y, gt, w.down, w.downBias);
}

/** Activations of non-gated feed-forward layers: y = down(act(up·x)). */
export type UngatedAct = 'relu2' | 'silu';

/** y = down(act(up·x + b_u)) + b_d (a non-gated MLP; `w.gate` is not read). */
export function ungatedFfn(g: Graph, w: GatedWeights, act: UngatedAct, x: Tensor, y: Tensor): void {
  const h = g.tmp(w.up.rows, x.rows);
  linear(g, h, x, w.up, w.upBias);
  if (act === 'relu2') relu2(g, h, h);
  else silu(g, h, h);
  linear(g, y, h, w.down, w.downBias);
}
