// Attention dispatches: RoPE tables, attention of query rows over st-resident caches (f32 or
// quantized rows), the append into quantized caches, clamping.

import { KernelError } from '../../kernels/runtime';
import type { GpuBuilder } from '../builder';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import { ATTN_MAX_HEAD_DIM, ATTN_PARAMS, attentionWgsl, CLAMP_PARAMS, clampWgsl } from '../kernels/attention.wgsl';
import { KV_QUANT_PARAMS, KV_QUANT_WG, kvQuantizeWgsl, type KvQuantType } from '../kernels/kvcache.wgsl';
import type { KvCacheType } from '../../kernels/kvcache';

export { ATTN_MAX_HEAD_DIM };

const tableCache = new WeakMap<GpuBuilder, Map<string, { cos: number; sin: number }>>();

/**
 * cos/sin tables [maxContext, rotaryDim/2] (attention factor folded in) as constants, built once per
 * distinct (rotaryDim, frequencies, factor) of a model: layers sharing a RoPE share its tables.
 */
export function ropeTables(B: GpuBuilder, r: { rotaryDim: number; invFreq: ArrayLike<number>; attentionFactor: number }): { cos: number; sin: number } {
  let cache = tableCache.get(B);
  if (!cache) tableCache.set(B, (cache = new Map()));
  const key = `${r.rotaryDim}|${r.attentionFactor}|${Array.from(r.invFreq).join(',')}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const L = B.maxContext, half = r.rotaryDim / 2;
  const ct = new Float32Array(L * half), sn = new Float32Array(L * half);
  for (let p = 0; p < L; p++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(p * r.invFreq[i]);
      ct[p * half + i] = Math.cos(ang) * r.attentionFactor;
      sn[p * half + i] = Math.sin(ang) * r.attentionFactor;
    }
  }
  const t = { cos: B.constant(ct), sin: B.constant(sn) };
  cache.set(key, t);
  return t;
}

export interface DecodeAttentionOptions {
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  /** Offset in `a` of rows · nHeads · maxN scratch floats for the score rows. */
  scores: number;
  /** Cache slots (positions) per head row of the scratch: every query position must stay below it. */
  maxN: number;
  /** Query rows of the dispatch (default 1): row r is the query at position step.pos + row0 + r. */
  rows?: number;
  row0?: number;
  /** Floats between query rows and between output rows (defaults nHeads·headDim, nHeads·vDim). */
  qRowStride?: number;
  oRowStride?: number;
  /** Sliding window W: the query at P sees positions > P − W (0 or absent: all). */
  window?: number;
  /** Scores become cap·tanh(score / cap) after scaling (0 or absent: none). */
  softcap?: number;
  /** Offset in `c` of nHeads sink logits (gpt-oss), joining the softmax denominator only. */
  sinks?: number;
  /**
   * The caches' element type (default f32). Quantized caches: kStride and vStride are the rows'
   * words (required), kCache / vCache word offsets in `st`.
   */
  cache?: KvCacheType;
  kStride?: number;
  vStride?: number;
}

/**
 * Attention of the query rows at a[q …] over st-resident caches: row r (position P = step.pos + row0
 * + r) over the cached positions 0 … P.
 */
export function decodeAttention(K: GpuKernels, b: GpuBufs, out: number, q: number, kCache: number, vCache: number, o: DecodeAttentionOptions): Dispatch {
  const { nHeads, nKv, headDim, vDim } = o;
  if (headDim > ATTN_MAX_HEAD_DIM) throw new KernelError('webgpu', `attention: headDim ${headDim} > ${ATTN_MAX_HEAD_DIM} is not supported by the WebGPU kernel`);
  if (!(nKv >= 1) || nHeads % nKv) throw new KernelError('webgpu', `attention: nHeads ${nHeads} is not a multiple of nKv ${nKv}`);
  const cap = o.softcap ?? 0;
  if (!(cap >= 0) || !Number.isFinite(cap)) throw new KernelError('webgpu', `attention: softcap must be ≥ 0, got ${cap}`);
  if (!Number.isFinite(o.scale)) throw new KernelError('webgpu', `attention: scale must be finite, got ${o.scale}`);
  const cache = o.cache ?? 'f32';
  if (cache !== 'f32' && (o.kStride === undefined || o.vStride === undefined)) throw new KernelError('webgpu', `attention: a ${cache} cache needs its row strides`);
  return K.dispatch(cache === 'f32' ? 'attention' : `attention_${cache}`, attentionCode(cache), ATTN_PARAMS, {
    nHeads, nKv, headDim, vDim, qOff: q, oOff: out, kOff: kCache, vOff: vCache,
    kStride: o.kStride ?? nKv * headDim, vStride: o.vStride ?? nKv * vDim, sOff: o.scores, maxN: o.maxN, scale: o.scale,
    window: o.window ?? 0, hasSinks: o.sinks === undefined ? 0 : 1, sinkOff: o.sinks ?? 0,
    softcap: cap, icap: cap > 0 ? Math.fround(1 / Math.fround(cap)) : 0,
    row0: o.row0 ?? 0, qRowStride: o.qRowStride ?? nHeads * headDim, oRowStride: o.oRowStride ?? nHeads * vDim,
  }, b, [nHeads, o.rows ?? 1, 1]);
}

const codes = new Map<KvCacheType, string>();
/** The attention kernel's source for a cache type (built once). */
function attentionCode(kv: KvCacheType): string {
  let c = codes.get(kv);
  if (c === undefined) codes.set(kv, (c = attentionWgsl(kv)));
  return c;
}

/**
 * Quantizes the `rows` rows at a[x …] (`xRow` floats apart; `heads` heads of `dim` values) into
 * the rows of positions step.pos … step.pos + rows − 1 of the cache at word `cache` of `st`,
 * rows of `rowWords` words (kernels/kvcache.ts).
 */
export function kvQuantize(K: GpuKernels, b: GpuBufs, kv: KvQuantType, cache: number, x: number, o: { heads: number; dim: number; rows: number; xRow: number; rowWords: number }): Dispatch {
  const { nx, ny } = K.split(Math.ceil(o.rowWords / KV_QUANT_WG));
  return K.dispatch(`kv_quantize_${kv}`, kvQuantizeWgsl(kv), KV_QUANT_PARAMS, {
    heads: o.heads, dim: o.dim, xOff: x, xRow: o.xRow, cOff: cache, rowWords: o.rowWords, rows: o.rows, nx,
  }, b, [nx, ny, o.rows]);
}

/** y[i] = min(max(x[i], −lim), lim) for i < n (offsets in `a`). */
export function clamp(K: GpuKernels, b: GpuBufs, y: number, x: number, n: number, lim: number): Dispatch {
  if (!(lim >= 0)) throw new KernelError('webgpu', `clamp: limit must be ≥ 0, got ${lim}`);
  const { nx, ny } = K.split(Math.ceil(n / 256));
  return K.dispatch('clamp', clampWgsl, CLAMP_PARAMS, { n, xOff: x, yOff: y, nx, lim }, b, [nx, ny, 1]);
}
