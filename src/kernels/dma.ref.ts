// Naive float64 reference of dynamic mask attention (kernels/dma.ts): an explicit mask per query,
// sort-based top-k of the biases, a plain softmax.
import { topkRef } from './attention.ref';

export interface DmaRefOptions {
  T: number; qPos0: number; nHeads: number; nKv: number; headDim: number; vDim: number; scale: number; window: number; keep: number;
}

/** q [T, Hq, D]; K [nPos, Hkv, D], V [nPos, Hkv, Dv], dt [nPos, Hkv] by position; A [Hkv]. out [T, Hq, Dv]. */
export function dmaAttentionRef(q: ArrayLike<number>, K: ArrayLike<number>, V: ArrayLike<number>, dt: ArrayLike<number>, A: ArrayLike<number>, o: DmaRefOptions): Float64Array {
  const { T, qPos0, nHeads, nKv, headDim: D, vDim: Dv, scale, window, keep } = o;
  const out = new Float64Array(T * nHeads * Dv);
  const softplus = (x: number) => (x > 20 ? x : Math.log(1 + Math.exp(x)));
  for (let t = 0; t < T; t++) {
    const P = qPos0 + t;
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / (nHeads / nKv));
      const visible: number[] = [];
      for (let j = 0; j <= P; j++) if (!(window > 0 && j <= P - window)) visible.push(j);
      const b = visible.map((j) => Math.fround(Math.exp(A[g] * softplus(dt[j * nKv + g]))));
      const keys = keep > 0 && visible.length > keep ? topkRef(b, keep).map((i) => visible[i]) : visible;
      const bias = new Map(visible.map((j, i) => [j, b[i]]));
      const s = keys.map((j) => {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(t * nHeads + h) * D + i] * K[(j * nKv + g) * D + i];
        return d * scale + bias.get(j)!;
      });
      const m = Math.max(...s);
      const den = s.reduce((a, x) => a + Math.exp(x - m), 0);
      keys.forEach((j, n) => {
        const w = Math.exp(s[n] - m) / den;
        for (let i = 0; i < Dv; i++) out[(t * nHeads + h) * Dv + i] += w * V[(j * nKv + g) * Dv + i];
      });
    }
  }
  return out;
}
