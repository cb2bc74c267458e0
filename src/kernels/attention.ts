// Softmax attention over KV caches (dense causal, sliding window over a ring buffer, soft-capping,
// learned sinks, GQA/MQA), attention over a selected set of cache slots, the selection helpers
// of sparse attention: exact top-k, Quest page bounds, DeepSeek-V3.2 lightning-indexer scores, and
// Quest sparse decode (questAppendKeys keeps page bounds as keys are appended; questAttend attends
// sinks ∪ top pages ∪ window per kv head).
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

/**
 * Folds T keys (keys: T rows of nKv·D f32, keyStride floats apart) at positions pos0 … pos0+T−1
 * into Quest page bounds (kMin, kMax [maxPages, nKv, D]): a position that starts a page sets its
 * page's bounds to its key, any other position widens them element-wise. A page entered mid-way
 * (after a rewind) keeps the bounds it had, which still bound its keys.
 */
export function questAppendKeys(k: K, kMin: number, kMax: number, keys: number, T: number, pos0: number, pageSize: number, maxPages: number, nKv: number, D: number, keyStride = nKv * D): void {
  checkInt('questAppendKeys', 'T', T);
  checkInt('questAppendKeys', 'pos0', pos0, 0);
  checkInt('questAppendKeys', 'pageSize', pageSize);
  checkInt('questAppendKeys', 'maxPages', maxPages);
  checkInt('questAppendKeys', 'nKv', nKv);
  checkInt('questAppendKeys', 'D', D);
  const W = nKv * D;
  checkInt('questAppendKeys', 'keyStride', keyStride, W);
  const lastPage = Math.floor((pos0 + T - 1) / pageSize);
  if (lastPage >= maxPages) throw new KernelError('questAppendKeys', `position ${pos0 + T - 1} is past the ${maxPages} pages of ${pageSize}`);
  checkBuf(k, 'questAppendKeys', 'kMin', kMin, maxPages * W * 4);
  checkBuf(k, 'questAppendKeys', 'kMax', kMax, maxPages * W * 4);
  checkBuf(k, 'questAppendKeys', 'keys', keys, ((T - 1) * keyStride + W) * 4);
  const mn = k.arena.f32(kMin, maxPages * W), mx = k.arena.f32(kMax, maxPages * W);
  const kv = k.arena.f32(keys, (T - 1) * keyStride + W);
  for (let t = 0; t < T; t++) {
    const pos = pos0 + t, b = Math.floor(pos / pageSize) * W, r = t * keyStride;
    if (pos % pageSize === 0) {
      for (let i = 0; i < W; i++) mn[b + i] = mx[b + i] = kv[r + i];
      continue;
    }
    for (let i = 0; i < W; i++) {
      const x = kv[r + i];
      if (x < mn[b + i]) mn[b + i] = x;
      if (x > mx[b + i]) mx[b + i] = x;
    }
  }
}

export interface QuestAttendOptions extends SelectedOptions {
  /** The query's position: keys 0 … pos are in the (linear) caches. */
  pos: number;
  pageSize: number;
  /** Pages chosen per kv head. */
  pages: number;
  /** Positions [0, sinkPositions) are always attended (attention sinks). */
  sinkPositions: number;
  /** Positions (pos − window, pos] are always attended (≥ 1). */
  window: number;
  /** Pages the bounds arrays hold. */
  maxPages: number;
}

/** Bytes of the scratch area questAttend takes. */
export function questScratchBytes(o: { nKv: number; maxPages: number; pages: number; pageSize: number; sinkPositions: number; window: number }): number {
  return 4 * (o.nKv * o.maxPages + o.pages + o.sinkPositions + o.window + o.pages * o.pageSize);
}

/**
 * Sparse top-k attention of one query (q [nHeads, headDim], contiguous heads) at position `pos`
 * over linear caches holding keys 0 … pos. With pos + 1 ≤ sinkPositions + window + pages·pageSize
 * it is the dense causal `attention` (same kernel, same result). Otherwise each kv head g attends
 *   [0, sinkPositions) ∪ (the top `pages` pages, clipped to M) ∪ [pos − window + 1, pos],
 * M = [sinkPositions, pos − window + 1) the positions between, candidate pages those meeting M, a page's
 * score Σ_{h in group g} Σ_d max(q_hd·kMin[p,g,d], q_hd·kMax[p,g,d]) (questPageScores; ties to the
 * lower page). kMin / kMax [maxPages, nKv, D] (questAppendKeys). scratch: questScratchBytes(o).
 */
export function questAttend(k: K, out: number, q: number, kCache: number, vCache: number, kMin: number, kMax: number, scratch: number, o: QuestAttendOptions): void {
  const { pos, pageSize, pages, sinkPositions: sinks, window, maxPages, nHeads, nKv, headDim: D, vDim: Dv } = o;
  checkInt('questAttend', 'pos', pos, 0);
  checkInt('questAttend', 'pageSize', pageSize);
  checkInt('questAttend', 'pages', pages);
  checkInt('questAttend', 'sinkPositions', sinks, 0);
  checkInt('questAttend', 'window', window);
  checkInt('questAttend', 'maxPages', maxPages);
  checkHeads('questAttend', nHeads, nKv, D, Dv);
  if ((o.qHeadStride ?? D) !== D) throw new KernelError('questAttend', 'query heads must be contiguous (qHeadStride = headDim)');
  if (o.idxStride) throw new KernelError('questAttend', 'idxStride is not an option of questAttend');
  const kvLen = pos + 1;
  if (kvLen <= sinks + window + pages * pageSize) {
    attention(k, out, q, kCache, vCache, {
      T: 1, qPos0: pos, nHeads, nKv, headDim: D, vDim: Dv, scale: o.scale, softcap: o.softcap, sinks: o.sinks,
      cache: o.cache, kStride: o.kStride, vStride: o.vStride,
    });
    return;
  }
  if (Math.ceil(kvLen / pageSize) > maxPages) throw new KernelError('questAttend', `position ${pos} is past the ${maxPages} pages of ${pageSize}`);
  checkBuf(k, 'questAttend', 'scratch', scratch, questScratchBytes(o));
  const mEnd = kvLen - window;
  const pLo = Math.floor(sinks / pageSize), pHi = Math.ceil(mEnd / pageSize), nCand = pHi - pLo;
  const W = nKv * D;
  const scores = scratch, sel = scratch + 4 * nKv * maxPages, list = sel + 4 * pages;
  questPageScores(k, scores, q, kMin + 4 * pLo * W, kMax + 4 * pLo * W, nCand, nKv, D, nHeads);
  const cache = cacheType('questAttend', o.cache);
  const { kStride, vStride, kBytes, vBytes } = cacheStrides('questAttend', cache, nKv, D, Dv, o);
  const f32 = cache === 'f32';
  // Head g of a cache row starts g·(head bytes) in; quantized heads need not be word-aligned, which
  // the kernels take (WebAssembly loads have no alignment requirement), so they are called directly.
  const hk = f32 ? 4 * D : kvHeadBytes(cache, D), hv = f32 ? 4 * Dv : kvHeadBytes(cache, Dv);
  checkBuf(k, 'questAttend', 'out', out, nHeads * Dv * 4);
  checkBuf(k, 'questAttend', 'kCache', kCache, pos * kBytes + nKv * hk);
  checkBuf(k, 'questAttend', 'vCache', vCache, pos * vBytes + nKv * hv);
  const softcap = o.softcap ?? 0;
  if (!(softcap >= 0)) throw new KernelError('questAttend', `softcap must be ≥ 0, got ${softcap}`);
  if (!Number.isFinite(o.scale)) throw new KernelError('questAttend', `scale must be finite, got ${o.scale}`);
  const sinkPtr = o.sinks ?? 0;
  if (sinkPtr !== 0) checkBuf(k, 'questAttend', 'sinks', sinkPtr, nHeads * 4);
  const G = nHeads / nKv;
  const selV = k.arena.i32(sel, pages), listV = k.arena.i32(list, sinks + window + pages * pageSize);
  for (let g = 0; g < nKv; g++) {
    const got = topkSelect(k, sel, scores + 4 * g * nCand, nCand, pages);
    let m = 0;
    for (let i = 0; i < sinks; i++) listV[m++] = i;
    for (let j = 0; j < got; j++) {
      const p = pLo + selV[j];
      const a = Math.max(p * pageSize, sinks), b = Math.min((p + 1) * pageSize, mEnd);
      for (let i = a; i < b; i++) listV[m++] = i;
    }
    for (let i = mEnd; i < kvLen; i++) listV[m++] = i;
    const args = [out + 4 * g * G * Dv, q + 4 * g * G * D, kCache + g * hk, vCache + g * hv, list, m, 0, G, 1, D, Dv, o.scale, softcap, sinkPtr ? sinkPtr + 4 * g * G : 0, D] as const;
    if (f32) k.exports.attendSelectedF32(...args, kStride, vStride);
    else k.exports.attendSelectedKvQ(KV_CODE[cache], ...args, kStride, vStride);
  }
}
