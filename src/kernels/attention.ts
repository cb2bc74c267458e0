// Softmax attention over KV caches (dense causal, sliding window over a ring buffer, soft-capping,
// learned sinks, GQA/MQA), attention over a selected set of cache slots, and the selection helpers
// of sparse attention: exact top-k, Quest page bounds, DeepSeek-V3.2 lightning-indexer scores.
// The attention kernels read f32 caches or quantized ones (Q8_0 / Q4_0 rows, kvcache.ts) in place.
import { checkBuf, checkInt } from './act';
import { KV_CODE, KV_QUANT_MAX_DIM, kvHeadBytes, kvRowBytes, type KvCacheType } from './kvcache';
import { KernelError } from './runtime';
import type { K } from './types';

export interface AttentionOptions {
  /** Query tokens; token t sits at absolute position qPos0 + t. */
  T: number;
  qPos0: number;
  /** Query heads; head h reads kv head floor(h / (nHeads / nKv)). */
  nHeads: number;
  nKv: number;
  /** Dims of q and k per head. */
  headDim: number;
  /** Dims of v per head (= out per head). */
  vDim: number;
  /** Multiplies q·k before soft-capping (HF `scaling`). */
  scale: number;
  /** Sliding window W: query at position P sees keys P−W < p ≤ P (HF `kv_idx > q_idx − sliding_window`). */
  window?: number;
  /** Gemma-2: scores become cap·tanh(scores/cap) after scaling, before masking. */
  softcap?: number;
  /** Pointer to f32[nHeads]: gpt-oss learned sink logit per head (joins the denominator only). */
  sinks?: number;
  /**
   * Ring-buffer cache of `capacity` slots: key p lives at slot p mod capacity. The caller writes the
   * chunk's T keys before calling, so capacity must be ≥ window + T − 1 (every key a query of the
   * chunk can see is still in the ring); without a window, ≥ qPos0 + T.
   */
  capacity?: number;
  /** Keys at positions ≥ kvLen are invisible (default qPos0 + T). */
  kvLen?: number;
  /** false: every query sees all keys [0, kvLen) (bidirectional, e.g. diffusion LMs). Default true. */
  causal?: boolean;
  /** Floats between heads of q (default headDim) and between tokens of q (default nHeads·qHeadStride). */
  qHeadStride?: number;
  qRowStride?: number;
  /**
   * Element type of the K and V caches (default f32). Quantized caches hold each head as the
   * blocks of kvcache.ts: head g of a row at byte g·kvHeadBytes(cache, headDim) (vDim for V).
   */
  cache?: KvCacheType;
  /**
   * Between consecutive positions of the K and V caches: floats for an f32 cache (default
   * nKv·headDim, nKv·vDim), bytes for a quantized one (default kvRowBytes(cache, nKv, headDim / vDim)).
   */
  kStride?: number;
  vStride?: number;
  /**
   * Optional lane-state area of 8·(T·nHeads + 4) bytes. It lets the kernel walk the cache in
   * position blocks across all heads (one pass over memory). Single-threaded builds use a static
   * area when it is absent; the threads build without it walks each kv head separately (same result).
   */
  scratch?: number;
}

function checkHeads(kernel: string, nHeads: number, nKv: number, D: number, Dv: number): void {
  checkInt(kernel, 'nHeads', nHeads);
  checkInt(kernel, 'nKv', nKv);
  if (nHeads % nKv !== 0) throw new KernelError(kernel, `nHeads ${nHeads} is not a multiple of nKv ${nKv}`);
  checkInt(kernel, 'headDim', D);
  checkInt(kernel, 'vDim', Dv);
}

/**
 * out [T, nHeads, vDim] = softmax(scale · q·Kᵀ (capped, masked)) · V, online softmax in f32.
 * q [T, nHeads, headDim]; kCache [slots, nKv, headDim]; vCache [slots, nKv, vDim].
 */
export function attention(k: K, out: number, q: number, kCache: number, vCache: number, o: AttentionOptions): void {
  const { T, qPos0, nHeads, nKv, headDim: D, vDim: Dv } = o;
  checkInt('attention', 'T', T);
  checkInt('attention', 'qPos0', qPos0, 0);
  checkHeads('attention', nHeads, nKv, D, Dv);
  if (!Number.isFinite(o.scale)) throw new KernelError('attention', `scale must be finite, got ${o.scale}`);
  const window = o.window ?? 0;
  checkInt('attention', 'window', window, 0);
  const softcap = o.softcap ?? 0;
  if (!(softcap >= 0) || !Number.isFinite(softcap)) throw new KernelError('attention', `softcap must be ≥ 0, got ${softcap}`);
  const causal = o.causal ?? true;
  const kvLen = o.kvLen ?? qPos0 + T;
  checkInt('attention', 'kvLen', kvLen);
  if (causal && kvLen < qPos0 + 1) throw new KernelError('attention', `kvLen ${kvLen} hides the first query's own key (qPos0 ${qPos0})`);
  if (!causal && window > 0) throw new KernelError('attention', 'window needs causal attention');
  const capacity = o.capacity ?? 0;
  checkInt('attention', 'capacity', capacity, 0);
  if (capacity > 0) {
    const lastPos = causal ? Math.min(qPos0 + T, kvLen) : kvLen;
    if (window > 0 ? capacity < Math.min(window + T - 1, lastPos) : capacity < lastPos) {
      throw new KernelError('attention', `ring capacity ${capacity} is too small: needs ≥ ${window > 0 ? `window + T − 1 = ${window + T - 1}` : `${lastPos} positions`}`);
    }
  }
  const qHeadStride = o.qHeadStride ?? D;
  checkInt('attention', 'qHeadStride', qHeadStride, D);
  const qRowStride = o.qRowStride ?? nHeads * qHeadStride;
  checkInt('attention', 'qRowStride', qRowStride, (nHeads - 1) * qHeadStride + D);
  const cache = cacheType('attention', o.cache);
  const { kStride, vStride, kBytes, vBytes } = cacheStrides('attention', cache, nKv, D, Dv, o);
  const slots = capacity > 0 ? capacity : kvLen;
  checkBuf(k, 'attention', 'out', out, T * nHeads * Dv * 4);
  checkBuf(k, 'attention', 'q', q, ((T - 1) * qRowStride + (nHeads - 1) * qHeadStride + D) * 4);
  checkBuf(k, 'attention', 'kCache', kCache, (slots - 1) * kBytes + nKv * kvHeadBytes(cache, D));
  checkBuf(k, 'attention', 'vCache', vCache, (slots - 1) * vBytes + nKv * kvHeadBytes(cache, Dv));
  if (o.sinks !== undefined && o.sinks !== 0) checkBuf(k, 'attention', 'sinks', o.sinks, nHeads * 4);
  const scratch = o.scratch ?? 0;
  if (scratch !== 0) checkBuf(k, 'attention', 'scratch', scratch, 8 * (T * nHeads + 4));
  if (cache === 'f32') {
    k.exports.attentionF32(out, q, kCache, vCache, T, qPos0, nHeads, nKv, D, Dv, o.scale, window, softcap, o.sinks ?? 0,
      capacity, kvLen, causal ? 1 : 0, qHeadStride, qRowStride, kStride, vStride, scratch);
  } else {
    k.exports.attentionKvQ(KV_CODE[cache], out, q, kCache, vCache, T, qPos0, nHeads, nKv, D, Dv, o.scale, window, softcap, o.sinks ?? 0,
      capacity, kvLen, causal ? 1 : 0, qHeadStride, qRowStride, kStride, vStride, scratch);
  }
}

function cacheType(kernel: string, c: KvCacheType | undefined): KvCacheType {
  const cache = c ?? 'f32';
  if (cache !== 'f32' && cache !== 'q8_0' && cache !== 'q4_0') throw new KernelError(kernel, `cache must be f32, q8_0 or q4_0, got ${JSON.stringify(c)}`);
  return cache;
}

/** Checked K / V strides in the cache's unit (floats or bytes), and in bytes. */
function cacheStrides(kernel: string, cache: KvCacheType, nKv: number, D: number, Dv: number, o: { kStride?: number; vStride?: number }) {
  const f32 = cache === 'f32';
  const kStride = o.kStride ?? (f32 ? nKv * D : kvRowBytes(cache, nKv, D));
  const vStride = o.vStride ?? (f32 ? nKv * Dv : kvRowBytes(cache, nKv, Dv));
  checkInt(kernel, 'kStride', kStride, f32 ? nKv * D : nKv * kvHeadBytes(cache, D));
  checkInt(kernel, 'vStride', vStride, f32 ? nKv * Dv : nKv * kvHeadBytes(cache, Dv));
  if (!f32 && (kStride % 4 || vStride % 4)) throw new KernelError(kernel, `strides of a ${cache} cache must be multiples of 4 bytes, got ${kStride} and ${vStride}`);
  if (!f32 && Math.max(D, Dv) > KV_QUANT_MAX_DIM) throw new KernelError(kernel, `a ${cache} cache takes head dimensions up to ${KV_QUANT_MAX_DIM}, got ${Math.max(D, Dv)}`);
  return { kStride, vStride, kBytes: f32 ? kStride * 4 : kStride, vBytes: f32 ? vStride * 4 : vStride };
}

export interface SelectedOptions {
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  softcap?: number;
  /** Pointer to f32[nHeads] sink logits. */
  sinks?: number;
  /** 0 (default): one list for every head; else kv head g reads its m slots at idx + g·idxStride (i32). */
  idxStride?: number;
  qHeadStride?: number;
  /** As in AttentionOptions. */
  cache?: KvCacheType;
  kStride?: number;
  vStride?: number;
}

/**
 * Attention of one query token (q [nHeads, headDim]) over only the m cache slots listed in idx (i32
 * slot numbers; any order, no duplicates expected): sparse top-k (DSA, Quest pages) or sinks ∪ window.
 * out [nHeads, vDim].
 */
export function attendSelected(k: K, out: number, q: number, kCache: number, vCache: number, idx: number, m: number, o: SelectedOptions): void {
  const { nHeads, nKv, headDim: D, vDim: Dv } = o;
  checkHeads('attendSelected', nHeads, nKv, D, Dv);
  checkInt('attendSelected', 'm', m);
  if (!Number.isFinite(o.scale)) throw new KernelError('attendSelected', `scale must be finite, got ${o.scale}`);
  const softcap = o.softcap ?? 0;
  if (!(softcap >= 0)) throw new KernelError('attendSelected', `softcap must be ≥ 0, got ${softcap}`);
  const idxStride = o.idxStride ?? 0;
  checkInt('attendSelected', 'idxStride', idxStride, 0);
  if (idxStride > 0 && idxStride < m) throw new KernelError('attendSelected', `idxStride ${idxStride} < m ${m}`);
  const qHeadStride = o.qHeadStride ?? D;
  checkInt('attendSelected', 'qHeadStride', qHeadStride, D);
  const cache = cacheType('attendSelected', o.cache);
  const { kStride, vStride, kBytes, vBytes } = cacheStrides('attendSelected', cache, nKv, D, Dv, o);
  checkBuf(k, 'attendSelected', 'out', out, nHeads * Dv * 4);
  checkBuf(k, 'attendSelected', 'q', q, ((nHeads - 1) * qHeadStride + D) * 4);
  checkBuf(k, 'attendSelected', 'idx', idx, ((idxStride > 0 ? (nKv - 1) * idxStride : 0) + m) * 4);
  const lists = k.arena.i32(idx, (idxStride > 0 ? (nKv - 1) * idxStride : 0) + m);
  let maxSlot = 0;
  for (let g = 0; g < (idxStride > 0 ? nKv : 1); g++) {
    for (let j = 0; j < m; j++) {
      const sl = lists[g * idxStride + j];
      if (sl < 0) throw new KernelError('attendSelected', `idx[${g * idxStride + j}] = ${sl} is negative`);
      if (sl > maxSlot) maxSlot = sl;
    }
  }
  checkBuf(k, 'attendSelected', 'kCache', kCache, maxSlot * kBytes + nKv * kvHeadBytes(cache, D));
  checkBuf(k, 'attendSelected', 'vCache', vCache, maxSlot * vBytes + nKv * kvHeadBytes(cache, Dv));
  if (o.sinks !== undefined && o.sinks !== 0) checkBuf(k, 'attendSelected', 'sinks', o.sinks, nHeads * 4);
  if (cache === 'f32') k.exports.attendSelectedF32(out, q, kCache, vCache, idx, m, idxStride, nHeads, nKv, D, Dv, o.scale, softcap, o.sinks ?? 0, qHeadStride, kStride, vStride);
  else k.exports.attendSelectedKvQ(KV_CODE[cache], out, q, kCache, vCache, idx, m, idxStride, nHeads, nKv, D, Dv, o.scale, softcap, o.sinks ?? 0, qHeadStride, kStride, vStride);
}

/**
 * Writes the indices of the `topk` largest of n scores to outIdx (i32), ascending; ties go to the
 * lowest index. O(n) radix select (≤ 34 vector passes, no scratch). Returns min(topk, n).
 * Scores must not be NaN; −Infinity (masked) is fine.
 */
export function topkSelect(k: K, outIdx: number, scores: number, n: number, topk: number): number {
  checkInt('topkSelect', 'n', n);
  checkInt('topkSelect', 'topk', topk, 0);
  checkBuf(k, 'topkSelect', 'outIdx', outIdx, Math.min(topk, n) * 4);
  checkBuf(k, 'topkSelect', 'scores', scores, n * 4);
  return k.exports.topkSelectF32(outIdx, scores, n, topk);
}

/**
 * Quest (arXiv 2406.10774) page scores for one query token: out[g·nPages + p] =
 * Σ_{h in kv group g} Σ_d max(q_hd·kMin[p,g,d], q_hd·kMax[p,g,d]) — the upper bound of q·k over the
 * page summed over the group's query heads (one selection per kv head; Quest proper scores each head).
 * q [Hq, D]; kMin, kMax [nPages, nKv, D]; out [nKv, nPages].
 */
export function questPageScores(k: K, out: number, q: number, kMin: number, kMax: number, nPages: number, nKv: number, D: number, Hq: number): void {
  checkInt('questPageScores', 'nPages', nPages);
  checkHeads('questPageScores', Hq, nKv, D, 1);
  checkBuf(k, 'questPageScores', 'out', out, nKv * nPages * 4);
  checkBuf(k, 'questPageScores', 'q', q, Hq * D * 4);
  checkBuf(k, 'questPageScores', 'kMin', kMin, nPages * nKv * D * 4);
  checkBuf(k, 'questPageScores', 'kMax', kMax, nPages * nKv * D * 4);
  k.exports.questPageScoresF32(out, q, kMin, kMax, nPages, nKv, D, Hq);
}

/**
 * Recomputes page `page`'s per-kv-head element-wise key min and max (kMin, kMax [nPages, nKv, D])
 * from the nValid keys in linear-cache slots [page·pageSize, page·pageSize + nValid).
 */
export function questUpdatePage(k: K, kMin: number, kMax: number, kCache: number, page: number, pageSize: number, nValid: number, nKv: number, D: number, kStride = nKv * D): void {
  checkInt('questUpdatePage', 'page', page, 0);
  checkInt('questUpdatePage', 'pageSize', pageSize);
  checkInt('questUpdatePage', 'nValid', nValid);
  if (nValid > pageSize) throw new KernelError('questUpdatePage', `nValid ${nValid} > pageSize ${pageSize}`);
  checkInt('questUpdatePage', 'nKv', nKv);
  checkInt('questUpdatePage', 'D', D);
  checkInt('questUpdatePage', 'kStride', kStride, nKv * D);
  checkBuf(k, 'questUpdatePage', 'kMin', kMin, (page + 1) * nKv * D * 4);
  checkBuf(k, 'questUpdatePage', 'kMax', kMax, (page + 1) * nKv * D * 4);
  checkBuf(k, 'questUpdatePage', 'kCache', kCache, ((page * pageSize + nValid - 1) * kStride + nKv * D) * 4);
  k.exports.questUpdatePageF32(kMin, kMax, kCache, page, pageSize, nValid, nKv, D, kStride);
}

/**
 * DeepSeek-V3.2 lightning-indexer scores of one query token over n cached indexer keys:
 * out[s] = scale · Σ_j wI[j] · ReLU(qI[j]·kI[s]). HF (`DeepseekV32Indexer`) computes
 * relu(q·k · index_head_dim^-0.5) and weights_proj(x) · index_n_heads^-0.5, so the default scale is
 * Di^-0.5 · Hi^-0.5 with wI the raw weights_proj output. qI [Hi, Di]; kI rows kStride floats apart.
 */
export function dsaIndexerScores(k: K, out: number, qI: number, wI: number, kICache: number, n: number, Hi: number, Di: number, opts: { scale?: number; kStride?: number } = {}): void {
  checkInt('dsaIndexerScores', 'n', n);
  checkInt('dsaIndexerScores', 'Hi', Hi);
  checkInt('dsaIndexerScores', 'Di', Di);
  const scale = opts.scale ?? 1 / Math.sqrt(Di) / Math.sqrt(Hi);
  if (!(scale > 0) || !Number.isFinite(scale)) throw new KernelError('dsaIndexerScores', `scale must be > 0, got ${scale}`);
  const kStride = opts.kStride ?? Di;
  checkInt('dsaIndexerScores', 'kStride', kStride, Di);
  checkBuf(k, 'dsaIndexerScores', 'out', out, n * 4);
  checkBuf(k, 'dsaIndexerScores', 'qI', qI, Hi * Di * 4);
  checkBuf(k, 'dsaIndexerScores', 'wI', wI, Hi * 4);
  checkBuf(k, 'dsaIndexerScores', 'kICache', kICache, ((n - 1) * kStride + Di) * 4);
  k.exports.dsaIndexerScoresF32(out, qI, wI, kICache, n, Hi, Di, scale, kStride);
}
