// Ops of DeepSeek attention (Multi-head Latent Attention and DeepSeek-V3.2's sparse attention):
// normalisation and RoPE on slices of rows, per-head matrix products (the absorbed W_UK / W_UV),
// and attention of the absorbed queries over the latent cache, dense or over the lightning
// indexer's top-k positions. Executors: src/graph/wasm-mla.ts, src/webgpu/graph-mla.ts.

import type { Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import { defineOp, type Graph, type Tensor } from './graph';
import type { RopeSpec } from './ops';

/** DeepSeek sparse attention: the lightning indexer's inputs and how many positions a query keeps. */
export interface IndexerSelect {
  /** The indexer's key cache (headDim floats per position, written before the attention). */
  keys: RegionSpec;
  /** Indexer queries [rows, nHeads·headDim] and head weights [rows, nHeads]. */
  q: Tensor;
  w: Tensor;
  nHeads: number;
  headDim: number;
  /** Score scale: score_s = scale · Σ_j w_j · ReLU(q_j · k_s). */
  scale: number;
  /** index_topk: a query at position p attends only its topk best positions once p + 1 > topk. */
  topk: number;
  /** Gets, on the WASM executor, the positions the last query of a pass attended to (ascending). */
  picks?: { lastSelected: Int32Array };
}

export interface LatentAttentionArgs {
  /** Outputs [rows, nHeads·vDim]. */
  y: Tensor;
  /** Absorbed queries [rows, nHeads·dim]. */
  q: Tensor;
  /** The latent cache, `dim` floats per position: keys are whole rows, values their first vDim floats. */
  cache: RegionSpec;
  nHeads: number;
  dim: number;
  vDim: number;
  scale: number;
  /** Restricts each query to the positions its indexer scores highest (DeepSeek-V3.2). */
  sparse?: IndexerSelect;
}

export interface HeadMatmulArgs {
  /** Per row and head z: y[z·yStride + r] = Σ_i W_z[r, i] · x[z·xStride + i], r < rows, i < cols. */
  y: Tensor;
  x: Tensor;
  /** An f32 matrix holding every head's W_z ([rows, cols], row-major) at wOff + z·wHeadStride floats. */
  w: Weight;
  heads: number;
  rows: number;
  cols: number;
  wOff: number;
  wHeadStride: number;
  xStride: number;
  yStride: number;
}

export const NORM_PREFIX = defineOp<{ x: Tensor; w: number; eps: number; dim: number }>('mla_norm_prefix');
export const ROPE_SLICE = defineOp<{ x: Tensor; heads: number; off: number; stride: number; rope: RopeSpec }>('mla_rope_slice');
export const HEAD_MATMUL = defineOp<HeadMatmulArgs>('mla_head_matmul');
export const LATENT_ATTENTION = defineOp<LatentAttentionArgs>('mla_latent_attention', { perSequence: true });

/** RMSNorm (weight arena pointer w) in place over the first `dim` floats of every row of x. */
export function normPrefix(g: Graph, x: Tensor, dim: number, n: { w: number; eps: number }): void {
  g.run(NORM_PREFIX, { x, w: n.w, eps: n.eps, dim });
}

/**
 * RoPE in place at the pass's positions on rope.rotaryDim floats of `heads` slices of every row of
 * x, slice h starting at float off + h·stride.
 */
export function ropeSlice(g: Graph, x: Tensor, o: { heads: number; off: number; stride: number }, rope: RopeSpec): void {
  g.run(ROPE_SLICE, { x, heads: o.heads, off: o.off, stride: o.stride, rope });
}

/** A different matrix per head: see HeadMatmulArgs. */
export function headMatmul(g: Graph, a: HeadMatmulArgs): void {
  g.run(HEAD_MATMUL, a);
}

/**
 * MQA of the pass's absorbed queries over the latent cache up to their positions (one latent head
 * shared by all query heads), or over the indexer's picks (`sparse`).
 */
export function latentAttention(g: Graph, a: LatentAttentionArgs): void {
  g.run(LATENT_ATTENTION, a);
}
