// Dispatches of DeepSeek attention: MLA's per-head products (absorbed W_UK_hᵀ q_nope_h, W_UV_h o_h),
// and DeepSeek-V3.2's sparse attention (lightning-indexer scores, top-k selection, attention over the
// listed positions or over every cached one). Offsets are in floats of `a` / `st`.

import { KernelError } from '../../kernels/runtime';
import type { KvCacheType } from '../../kernels/kvcache';
import type { Dispatch, GpuBufs, GpuKernels, GpuWeight } from '../ops';
import { HEAD_MM_PARAMS, headMatmulWgsl } from '../kernels/mla.wgsl';
import { INDEXER_PARAMS, INDEXER_WG, indexerWgsl, SPARSE_ATTN_PARAMS, sparseAttentionWgsl, TOPK_PARAMS, topkWgsl } from '../kernels/sparse_attention.wgsl';

/**
 * y[t·yRow + z·yStride + r] = Σ_i W[wOff + z·wHeadStride + r·cols + i] · x[t·xRow + z·xStride + i]
 * for r < rows, z < heads, t < T (default 1); w an f32 weight buffer, wOff / wHeadStride in words.
 */
export function headMatmul(K: GpuKernels, b: GpuBufs, y: number, x: number, w: GpuWeight,
  o: { rows: number; cols: number; heads: number; wOff: number; wHeadStride: number; xStride: number; yStride: number; T?: number; xRow?: number; yRow?: number }): Dispatch {
  if (w.dtype !== 'f32') throw new KernelError('webgpu', `headMatmul: ${w.dtype} weight (f32 only)`);
  return K.dispatch('mla_head_mm', headMatmulWgsl, HEAD_MM_PARAMS, {
    rows: o.rows, cols: o.cols, heads: o.heads, wOff: o.wOff, wHeadStride: o.wHeadStride, xOff: x, xStride: o.xStride, yOff: y, yStride: o.yStride,
    xRow: o.xRow ?? 0, yRow: o.yRow ?? 0,
  }, b, [o.rows, o.heads, o.T ?? 1], w.buf);
}

/**
 * Lightning-indexer scores of one query over the n = step.pos + row + 1 cached keys (row: the query's
 * place in the pass, default 0): a[scores + j] = scale · Σ_h a[w + h] · ReLU(a[q + h·Di …]·st[kCache +
 * j·kStride …]); maxN bounds n.
 */
export function indexerScores(K: GpuKernels, b: GpuBufs, scores: number, q: number, w: number, kCache: number, o: { Hi: number; Di: number; maxN: number; scale: number; kStride?: number; row?: number }): Dispatch {
  const groups = Math.ceil(o.maxN / INDEXER_WG);
  const { nx, ny } = K.split(groups);
  return K.dispatch('dsa_indexer', indexerWgsl, INDEXER_PARAMS, {
    Hi: o.Hi, Di: o.Di, qOff: q, wOff: w, kOff: kCache, kStride: o.kStride ?? o.Di, sOff: scores, nx, scale: o.scale, row: o.row ?? 0,
  }, b, [nx, ny, 1]);
}

/**
 * Positions of the topk largest of a[scores, scores + n) (n = step.pos + row + 1), ascending, ties to
 * the lowest position, as f32 numbers at a[idx …]; all n positions when topk ≥ n.
 */
export function topkSelect(K: GpuKernels, b: GpuBufs, idx: number, scores: number, topk: number, row = 0): Dispatch {
  if (!Number.isInteger(topk) || topk < 1) throw new KernelError('webgpu', `topkSelect: topk ${topk} must be ≥ 1`);
  return K.dispatch('dsa_topk', topkWgsl, TOPK_PARAMS, { topk, sOff: scores, idxOff: idx, row }, b, [1, 1, 1]);
}

export interface SparseAttnOptions {
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  /** Floats between query heads (default headDim). */
  qStride?: number;
  /** Floats between cache positions (defaults nKv·headDim, nKv·vDim). */
  kStride?: number;
  vStride?: number;
  /** Scratch of nHeads·maxN floats in `a`; maxN ≥ the positions attended. */
  scores: number;
  maxN: number;
  /** Attend only the min(topk, n) positions listed at a[idx …] (f32 numbers). */
  idx?: { off: number; topk: number };
  /** The query's place in the pass (default 0): it sits at position step.pos + row and sees n = that + 1 positions. */
  row?: number;
  /** The caches' element type (default f32); a quantized cache's strides are its rows' words. */
  cache?: KvCacheType;
}

const sparseCodes = new Map<KvCacheType, string>();

/** One query token's attention over st-resident caches: every position 0 … its own, or the listed ones. */
export function sparseAttention(K: GpuKernels, b: GpuBufs, out: number, q: number, kCache: number, vCache: number, o: SparseAttnOptions): Dispatch {
  if (o.nHeads % o.nKv) throw new KernelError('webgpu', `sparseAttention: nHeads ${o.nHeads} is not a multiple of nKv ${o.nKv}`);
  const cache = o.cache ?? 'f32';
  let code = sparseCodes.get(cache);
  if (code === undefined) sparseCodes.set(cache, (code = sparseAttentionWgsl(cache)));
  return K.dispatch(cache === 'f32' ? 'sparse_attention' : `sparse_attention_${cache}`, code, SPARSE_ATTN_PARAMS, {
    nHeads: o.nHeads, nKv: o.nKv, headDim: o.headDim, vDim: o.vDim, qOff: q, qStride: o.qStride ?? o.headDim, oOff: out, kOff: kCache, vOff: vCache,
    kStride: o.kStride ?? o.nKv * o.headDim, vStride: o.vStride ?? o.nKv * o.vDim, sOff: o.scores, maxN: o.maxN,
    useIdx: o.idx ? 1 : 0, idxOff: o.idx?.off ?? 0, topk: o.idx?.topk ?? 0, scale: o.scale, row: o.row ?? 0,
  }, b, [o.nHeads, 1, 1]);
}
