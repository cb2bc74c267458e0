// Dynamic mask attention (Doge, graph/ops-dma.ts) over f32 caches in the arena: per query token
// and KV head, the key biases b[j] = exp(A·softplus(dt[j])) of the visible positions, the `keep`
// largest of them when more are visible (ties: the lower position), then a max-subtracted softmax
// of scale·q·k[j] + b[j] over those keys and the value mix, accumulated in f64.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

export interface DmaOptions {
  /** Query tokens; token t sits at position qPos0 + t and sees positions ≤ qPos0 + t. */
  T: number;
  qPos0: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  /** Sliding window W (0: none): the query at P sees positions > P − W. */
  window: number;
  /** Most keys a query attends to (0: no limit). */
  keep: number;
}

/** torch.nn.functional.softplus (β 1, threshold 20). */
export function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}

/** The key bias exp(A · softplus(dt)), rounded to f32. */
export function dmaBias(a: number, dt: number): number {
  return Math.fround(Math.exp(a * softplus(dt)));
}

/**
 * Marks in `sel` the visible positions lo … hi (biases `b`, indexed by position) a query attends to:
 * all of them, or the `keep` with the largest bias (ties: lower position first). Returns the count.
 */
export function dmaSelect(b: Float64Array, lo: number, hi: number, keep: number, sel: Uint8Array, sorted: Float64Array): number {
  const n = hi - lo + 1;
  if (keep <= 0 || n <= keep) {
    sel.fill(1, lo, hi + 1);
    return n;
  }
  const s = sorted.subarray(0, n);
  s.set(b.subarray(lo, hi + 1));
  s.sort();
  const thr = s[n - keep];
  let above = 0;
  for (let j = lo; j <= hi; j++) if (b[j] > thr) above++;
  let ties = keep - above;
  for (let j = lo; j <= hi; j++) {
    const x = b[j];
    sel[j] = x > thr || (x === thr && ties-- > 0) ? 1 : 0;
  }
  return keep;
}

/**
 * out [T, nHeads, vDim] from q [T, nHeads, headDim] over the caches (indexed by position):
 * kCache [nKv, headDim], vCache [nKv, vDim] and dtCache [nKv] per position; A f32[nKv].
 */
export function dmaAttention(k: K, out: number, q: number, kCache: number, vCache: number, dtCache: number, A: number, o: DmaOptions): void {
  const { T, qPos0, nHeads, nKv, headDim: D, vDim: Dv, scale, window, keep } = o;
  const name = 'dma_attention';
  checkInt(name, 'T', T);
  checkInt(name, 'qPos0', qPos0, 0);
  checkInt(name, 'nHeads', nHeads);
  checkInt(name, 'nKv', nKv);
  checkInt(name, 'headDim', D);
  checkInt(name, 'vDim', Dv);
  checkInt(name, 'window', window, 0);
  checkInt(name, 'keep', keep, 0);
  if (nHeads % nKv) throw new KernelError(name, `nHeads ${nHeads} is not a multiple of nKv ${nKv}`);
  if (!Number.isFinite(scale)) throw new KernelError(name, `scale must be finite, got ${scale}`);
  const L = qPos0 + T;
  checkBuf(k, name, 'out', out, T * nHeads * Dv * 4);
  checkBuf(k, name, 'q', q, T * nHeads * D * 4);
  checkBuf(k, name, 'kCache', kCache, L * nKv * D * 4);
  checkBuf(k, name, 'vCache', vCache, L * nKv * Dv * 4);
  checkBuf(k, name, 'dtCache', dtCache, L * nKv * 4);
  checkBuf(k, name, 'A', A, nKv * 4);
  const f = (p: number, n: number) => k.arena.f32(p, n);
  const qv = f(q, T * nHeads * D), kv = f(kCache, L * nKv * D), vv = f(vCache, L * nKv * Dv), dv = f(dtCache, L * nKv);
  const av = f(A, nKv), ov = f(out, T * nHeads * Dv);
  const G = nHeads / nKv;
  // Biases per KV head, indexed by position.
  const bias = Array.from({ length: nKv }, (_, g) => {
    const b = new Float64Array(L);
    for (let j = 0; j < L; j++) b[j] = dmaBias(av[g], dv[j * nKv + g]);
    return b;
  });
  const sel = new Uint8Array(L), sorted = new Float64Array(L), s = new Float64Array(L), acc = new Float64Array(Dv);
  for (let t = 0; t < T; t++) {
    const P = qPos0 + t, lo = window > 0 ? Math.max(0, P - window + 1) : 0;
    for (let g = 0; g < nKv; g++) {
      const b = bias[g];
      dmaSelect(b, lo, P, keep, sel, sorted);
      for (let h = g * G; h < (g + 1) * G; h++) {
        const qo = (t * nHeads + h) * D;
        let m = -Infinity;
        for (let j = lo; j <= P; j++) {
          if (!sel[j]) continue;
          const ko = (j * nKv + g) * D;
          let d = 0;
          for (let i = 0; i < D; i++) d += qv[qo + i] * kv[ko + i];
          const x = d * scale + b[j];
          s[j] = x;
          if (x > m) m = x;
        }
        let den = 0;
        acc.fill(0);
        for (let j = lo; j <= P; j++) {
          if (!sel[j]) continue;
          const e = Math.exp(s[j] - m);
          den += e;
          const vo = (j * nKv + g) * Dv;
          for (let i = 0; i < Dv; i++) acc[i] += e * vv[vo + i];
        }
        const oo = (t * nHeads + h) * Dv;
        for (let i = 0; i < Dv; i++) ov[oo + i] = acc[i] / den;
      }
    }
  }
}
