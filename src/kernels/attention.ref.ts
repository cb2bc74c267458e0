// Naive float64 references for attention and the sparse-attention helpers: full score rows,
// explicit masks, a plain softmax, sort-based top-k.

export interface AttnRefOptions {
  T: number; qPos0: number; nHeads: number; nKv: number; headDim: number; vDim: number; scale: number;
  window?: number; softcap?: number; sinks?: ArrayLike<number>; kvLen?: number; causal?: boolean;
}

/**
 * q [T, Hq, D]; keys/values indexed by absolute position: K [nPos, Hkv, D], V [nPos, Hkv, Dv].
 * out [T, Hq, Dv].
 */
export function attentionRef(q: ArrayLike<number>, K: ArrayLike<number>, V: ArrayLike<number>, o: AttnRefOptions): Float64Array {
  const { T, qPos0, nHeads, nKv, headDim: D, vDim: Dv, scale } = o;
  const G = nHeads / nKv;
  const kvLen = o.kvLen ?? qPos0 + T;
  const out = new Float64Array(T * nHeads * Dv);
  for (let t = 0; t < T; t++) {
    const pos = qPos0 + t;
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / G);
      const keys: number[] = [];
      for (let p = 0; p < kvLen; p++) {
        if ((o.causal ?? true) && p > pos) continue;
        if (o.window && p <= pos - o.window) continue;
        keys.push(p);
      }
      const s = keys.map((p) => {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(t * nHeads + h) * D + i] * K[(p * nKv + g) * D + i];
        d *= scale;
        return o.softcap ? o.softcap * Math.tanh(d / o.softcap) : d;
      });
      const sink = o.sinks ? o.sinks[h] : -Infinity;
      const m = Math.max(...s, sink);
      let den = o.sinks ? Math.exp(sink - m) : 0;
      for (const v of s) den += Math.exp(v - m);
      for (let j = 0; j < keys.length; j++) {
        const w = Math.exp(s[j] - m) / den;
        for (let i = 0; i < Dv; i++) out[(t * nHeads + h) * Dv + i] += w * V[(keys[j] * nKv + g) * Dv + i];
      }
    }
  }
  return out;
}

/** One query over the listed slots of caches [slots, Hkv, D] / [slots, Hkv, Dv]; lists per kv head via idxStride. */
export function attendSelectedRef(q: ArrayLike<number>, K: ArrayLike<number>, V: ArrayLike<number>, idx: ArrayLike<number>, m: number, o: { nHeads: number; nKv: number; headDim: number; vDim: number; scale: number; softcap?: number; sinks?: ArrayLike<number>; idxStride?: number }): Float64Array {
  const { nHeads, nKv, headDim: D, vDim: Dv, scale } = o;
  const G = nHeads / nKv;
  const out = new Float64Array(nHeads * Dv);
  for (let h = 0; h < nHeads; h++) {
    const g = Math.floor(h / G);
    const slots = Array.from({ length: m }, (_, j) => idx[g * (o.idxStride ?? 0) + j]);
    const s = slots.map((sl) => {
      let d = 0;
      for (let i = 0; i < D; i++) d += q[h * D + i] * K[(sl * nKv + g) * D + i];
      d *= scale;
      return o.softcap ? o.softcap * Math.tanh(d / o.softcap) : d;
    });
    const sink = o.sinks ? o.sinks[h] : -Infinity;
    const mx = Math.max(...s, sink);
    let den = o.sinks ? Math.exp(sink - mx) : 0;
    for (const v of s) den += Math.exp(v - mx);
    slots.forEach((sl, j) => {
      const w = Math.exp(s[j] - mx) / den;
      for (let i = 0; i < Dv; i++) out[h * Dv + i] += w * V[(sl * nKv + g) * Dv + i];
    });
  }
  return out;
}

/** Sort-based top-k: indices of the k largest (ties: lower index first), returned ascending. */
export function topkRef(scores: ArrayLike<number>, k: number): number[] {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => (scores[b] - scores[a]) || (a - b));
  return order.slice(0, Math.min(k, scores.length)).sort((a, b) => a - b);
}

export function questPageScoresRef(q: ArrayLike<number>, kMin: ArrayLike<number>, kMax: ArrayLike<number>, nPages: number, nKv: number, D: number, Hq: number): Float64Array {
  const G = Hq / nKv;
  const out = new Float64Array(nKv * nPages);
  for (let g = 0; g < nKv; g++) {
    for (let p = 0; p < nPages; p++) {
      let s = 0;
      for (let h = g * G; h < (g + 1) * G; h++) {
        for (let d = 0; d < D; d++) {
          const qd = q[h * D + d];
          s += Math.max(qd * kMin[(p * nKv + g) * D + d], qd * kMax[(p * nKv + g) * D + d]);
        }
      }
      out[g * nPages + p] = s;
    }
  }
  return out;
}

/** HF DeepseekV32Indexer: Σ_j (w_j · Hi^-0.5) · relu(q_j·k_s · Di^-0.5). */
export function dsaIndexerScoresRef(qI: ArrayLike<number>, wI: ArrayLike<number>, kI: ArrayLike<number>, n: number, Hi: number, Di: number): Float64Array {
  const out = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    let acc = 0;
    for (let j = 0; j < Hi; j++) {
      let d = 0;
      for (let i = 0; i < Di; i++) d += qI[j * Di + i] * kI[s * Di + i];
      acc += wI[j] * Hi ** -0.5 * Math.max(d * Di ** -0.5, 0);
    }
    out[s] = acc;
  }
  return out;
}

/** Page bounds from scratch: kMin / kMax [nPages, nKv, D] of keys K [n, nKv, D], pages of pageSize. */
export function questBoundsRef(K: ArrayLike<number>, n: number, pageSize: number, nKv: number, D: number): { kMin: Float64Array; kMax: Float64Array } {
  const nPages = Math.ceil(n / pageSize), W = nKv * D;
  const kMin = new Float64Array(nPages * W).fill(Infinity), kMax = new Float64Array(nPages * W).fill(-Infinity);
  for (let p = 0; p < n; p++) {
    const b = Math.floor(p / pageSize) * W;
    for (let i = 0; i < W; i++) {
      kMin[b + i] = Math.min(kMin[b + i], K[p * W + i]);
      kMax[b + i] = Math.max(kMax[b + i], K[p * W + i]);
    }
  }
  return { kMin, kMax };
}

/**
 * The positions sparse top-k attention reads for each kv head at query position pos (all of
 * 0 … pos when pos + 1 ≤ sinks + window + pages·pageSize): sinks, the window, and the `pages`
 * pages between with the highest group-summed Quest scores (from bounds of K recomputed here),
 * clipped to the positions between. Sorted ascending.
 */
export function questSelectRef(q: ArrayLike<number>, K: ArrayLike<number>, pos: number, o: { nHeads: number; nKv: number; headDim: number; pageSize: number; pages: number; sinks: number; window: number }): number[][] {
  const { nHeads, nKv, headDim: D, pageSize, pages, sinks, window } = o;
  const n = pos + 1;
  if (n <= sinks + window + pages * pageSize) return Array.from({ length: nKv }, () => Array.from({ length: n }, (_, i) => i));
  const { kMin, kMax } = questBoundsRef(K, n, pageSize, nKv, D);
  const nPages = Math.ceil(n / pageSize);
  const scores = questPageScoresRef(q, kMin, kMax, nPages, nKv, D, nHeads);
  const mEnd = n - window;
  const lists: number[][] = [];
  for (let g = 0; g < nKv; g++) {
    const cand: number[] = [];
    for (let p = 0; p < nPages; p++) if (p * pageSize < mEnd && (p + 1) * pageSize > sinks) cand.push(p);
    const top = topkRef(cand.map((p) => scores[g * nPages + p]), pages).map((i) => cand[i]);
    const set = new Set<number>();
    for (let i = 0; i < sinks; i++) set.add(i);
    for (const p of top) for (let i = Math.max(p * pageSize, sinks); i < Math.min((p + 1) * pageSize, mEnd); i++) set.add(i);
    for (let i = mEnd; i < n; i++) set.add(i);
    lists.push([...set].sort((a, b) => a - b));
  }
  return lists;
}
