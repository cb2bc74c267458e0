import { describe, expect, it } from 'vitest';
import { attendSelected, attention, dsaIndexerScores, questPageScores, questUpdatePage, topkSelect, type AttentionOptions } from '../src/kernels/attention';
import { attendSelectedRef, attentionRef, dsaIndexerScoresRef, questPageScoresRef, topkRef } from '../src/kernels/attention.ref';
import type { K } from '../src/kernels/types';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerance: f32 dot products, an online softmax with a ~2-ulp vector exp, and f32 accumulation of
// up to a few hundred weighted rows, against float64 references: ≤ 1e-5 relative. Prefill against
// step-by-step decode differs only in rounding order (lanes are packed differently): ≤ 2e-6.

/** Writes keys/values given by absolute position into a linear or ring cache. */
function fillCache(k: K, kc: number, vc: number, K: Float32Array, V: Float32Array, from: number, to: number, nKv: number, D: number, Dv: number, capacity = 0): void {
  const kv = k.arena.f32(kc, (capacity || to) * nKv * D), vv = k.arena.f32(vc, (capacity || to) * nKv * Dv);
  for (let p = from; p < to; p++) {
    const s = capacity ? p % capacity : p;
    kv.set(K.subarray(p * nKv * D, (p + 1) * nKv * D), s * nKv * D);
    vv.set(V.subarray(p * nKv * Dv, (p + 1) * nKv * Dv), s * nKv * Dv);
  }
}

interface Case { T: number; qPos0: number; Hq: number; Hkv: number; D: number; Dv: number; window?: number; softcap?: number; sinks?: boolean }

const CASES: Case[] = [
  { T: 1, qPos0: 0, Hq: 1, Hkv: 1, D: 8, Dv: 8 },
  { T: 5, qPos0: 0, Hq: 4, Hkv: 4, D: 17, Dv: 17 },
  { T: 5, qPos0: 11, Hq: 4, Hkv: 2, D: 17, Dv: 8 },
  { T: 33, qPos0: 0, Hq: 8, Hkv: 2, D: 64, Dv: 64 },
  { T: 33, qPos0: 7, Hq: 4, Hkv: 1, D: 64, Dv: 32 },
  { T: 1, qPos0: 200, Hq: 6, Hkv: 1, D: 64, Dv: 64 },
  { T: 1, qPos0: 90, Hq: 8, Hkv: 2, D: 17, Dv: 24 },
  { T: 33, qPos0: 3, Hq: 3, Hkv: 1, D: 8, Dv: 8, window: 9 },
  { T: 5, qPos0: 40, Hq: 4, Hkv: 2, D: 64, Dv: 64, window: 16, softcap: 50 },
  { T: 17, qPos0: 0, Hq: 4, Hkv: 4, D: 17, Dv: 17, softcap: 2 },
  { T: 7, qPos0: 13, Hq: 8, Hkv: 2, D: 64, Dv: 64, sinks: true },
  { T: 1, qPos0: 300, Hq: 2, Hkv: 1, D: 8, Dv: 8, sinks: true, window: 128 },
];

describe.each(BUILDS)('attention (%s build)', (build) => {
  it.each(CASES)('T=$T qPos0=$qPos0 Hq=$Hq Hkv=$Hkv D=$D Dv=$Dv window=$window softcap=$softcap sinks=$sinks', async (c) => {
    const k = await kernels(build);
    const r = rng(c.T * 1000 + c.qPos0 * 7 + c.Hq * 31 + c.D);
    const n = c.qPos0 + c.T;
    const q = randn(c.T * c.Hq * c.D, r, 1.5), K = randn(n * c.Hkv * c.D, r, 1.5), V = randn(n * c.Hkv * c.Dv, r);
    const sinks = c.sinks ? randn(c.Hq, r, 3) : undefined;
    const Q = k.arena.putF32(q), O = k.arena.f32buf(c.T * c.Hq * c.Dv);
    const kc = k.arena.alloc(n * c.Hkv * c.D * 4), vc = k.arena.alloc(n * c.Hkv * c.Dv * 4);
    fillCache(k, kc, vc, K, V, 0, n, c.Hkv, c.D, c.Dv);
    const S = sinks ? k.arena.putF32(sinks).ptr : undefined;
    const o: AttentionOptions = { T: c.T, qPos0: c.qPos0, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale: 1 / Math.sqrt(c.D), window: c.window, softcap: c.softcap, sinks: S };
    poison(O.v);
    attention(k, O.ptr, Q.ptr, kc, vc, o);
    const want = attentionRef(q, K, V, { ...o, sinks });
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
  });

  it.each([
    [1, 1, 8], [4, 2, 17], [8, 2, 64], [4, 1, 64], [5, 5, 24],
  ])('prefill of T tokens = T single decode steps (Hq=%i Hkv=%i D=%i, window 6, sinks)', async (Hq, Hkv, D) => {
    const k = await kernels(build);
    const r = rng(Hq * 100 + D);
    const T = 21, q0 = 4, n = q0 + T;
    const q = randn(T * Hq * D, r, 1.5), K = randn(n * Hkv * D, r, 1.5), V = randn(n * Hkv * D, r);
    const Q = k.arena.putF32(q), A = k.arena.f32buf(T * Hq * D), B = k.arena.f32buf(T * Hq * D), S = k.arena.putF32(randn(Hq, r, 2));
    const kc = k.arena.alloc(n * Hkv * D * 4), vc = k.arena.alloc(n * Hkv * D * 4);
    fillCache(k, kc, vc, K, V, 0, n, Hkv, D, D);
    const base = { nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.3, window: 6, sinks: S.ptr };
    poison(A.v);
    poison(B.v);
    attention(k, A.ptr, Q.ptr, kc, vc, { ...base, T, qPos0: q0 });
    for (let t = 0; t < T; t++) attention(k, B.ptr + t * Hq * D * 4, Q.ptr + t * Hq * D * 4, kc, vc, { ...base, T: 1, qPos0: q0 + t });
    expect(maxRelErr(A.v, B.v)).toBeLessThan(2e-6);
  });

  it.each([[1, 1, 8, 32], [4, 2, 17, 7], [2, 1, 64, 100]])('ring buffer decode over 600 positions (Hq=%i Hkv=%i D=%i window=%i, capacity = window)', async (Hq, Hkv, D, W) => {
    const k = await kernels(build);
    const r = rng(D * 7 + W);
    const N = 600;
    const q = randn(N * Hq * D, r, 1.5), K = randn(N * Hkv * D, r, 1.5), V = randn(N * Hkv * D, r);
    const Q = k.arena.putF32(q), O = k.arena.f32buf(Hq * D);
    const kc = k.arena.alloc(W * Hkv * D * 4), vc = k.arena.alloc(W * Hkv * D * 4);
    const want = attentionRef(q, K, V, { T: N, qPos0: 0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 1 / Math.sqrt(D), window: W });
    let worst = 0;
    for (let p = 0; p < N; p++) {
      fillCache(k, kc, vc, K, V, p, p + 1, Hkv, D, D, W);
      poison(O.v);
      attention(k, O.ptr, Q.ptr + p * Hq * D * 4, kc, vc, { T: 1, qPos0: p, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 1 / Math.sqrt(D), window: W, capacity: W });
      worst = Math.max(worst, maxRelErr(O.v, want.subarray(p * Hq * D, (p + 1) * Hq * D)));
    }
    expect(worst).toBeLessThan(1e-5);
  });

  it('ring buffer prefill in chunks of T with capacity = window + T − 1 wraps correctly', async () => {
    const k = await kernels(build);
    const r = rng(99);
    const Hq = 4, Hkv = 2, D = 17, W = 10, T = 6, cap = W + T - 1, N = 7 * T + 3;
    const q = randn(N * Hq * D, r, 1.5), K = randn(N * Hkv * D, r, 1.5), V = randn(N * Hkv * D, r);
    const Q = k.arena.putF32(q), O = k.arena.f32buf(N * Hq * D);
    const kc = k.arena.alloc(cap * Hkv * D * 4), vc = k.arena.alloc(cap * Hkv * D * 4);
    poison(O.v);
    for (let p0 = 0; p0 < N; p0 += T) {
      const t = Math.min(T, N - p0);
      fillCache(k, kc, vc, K, V, p0, p0 + t, Hkv, D, D, cap);
      attention(k, O.ptr + p0 * Hq * D * 4, Q.ptr + p0 * Hq * D * 4, kc, vc, { T: t, qPos0: p0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.25, window: W, capacity: cap, softcap: 20 });
    }
    const want = attentionRef(q, K, V, { T: N, qPos0: 0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.25, window: W, softcap: 20 });
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
    expect(() => attention(k, O.ptr, Q.ptr, kc, vc, { T: T + 1, qPos0: 40, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 1, window: W, capacity: cap })).toThrow(/capacity/);
  });

  it.each([
    [1, 6, 2, 64, 1500, 0], [5, 6, 2, 64, 1300, 0], [3, 12, 4, 64, 900, 200], [33, 4, 4, 64, 700, 0],
  ])('long context, many key blocks: T=%i Hq=%i Hkv=%i D=%i ctx=%i window=%i, sinks; with and without scratch', async (T, Hq, Hkv, D, n, window) => {
    const k = await kernels(build);
    const r = rng(T + n);
    const q0 = n - T;
    const q = randn(T * Hq * D, r, 1.5), K = randn(n * Hkv * D, r, 1.5), V = randn(n * Hkv * D, r);
    const sinks = randn(Hq, r, 2);
    const Q = k.arena.putF32(q), O = k.arena.f32buf(T * Hq * D), S = k.arena.putF32(sinks), X = k.arena.f32buf(2 * (T * Hq + 4));
    const kc = k.arena.alloc(n * Hkv * D * 4), vc = k.arena.alloc(n * Hkv * D * 4);
    fillCache(k, kc, vc, K, V, 0, n, Hkv, D, D);
    const o: AttentionOptions = { T, qPos0: q0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.15, window: window || undefined, sinks: S.ptr };
    const want = attentionRef(q, K, V, { ...o, sinks });
    poison(O.v);
    attention(k, O.ptr, Q.ptr, kc, vc, o);
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
    poison(O.v);
    attention(k, O.ptr, Q.ptr, kc, vc, { ...o, scratch: X.ptr });
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
  });

  it('the threads build (no static lane state: one pass per kv head) gives the same result', async () => {
    const k = await kernels('threads');
    const r = rng(3);
    const T = 3, Hq = 6, Hkv = 2, D = 64, n = 1200;
    const q = randn(T * Hq * D, r, 1.5), K = randn(n * Hkv * D, r, 1.5), V = randn(n * Hkv * D, r);
    const Q = k.arena.putF32(q), O = k.arena.f32buf(T * Hq * D);
    const kc = k.arena.alloc(n * Hkv * D * 4), vc = k.arena.alloc(n * Hkv * D * 4);
    fillCache(k, kc, vc, K, V, 0, n, Hkv, D, D);
    const o: AttentionOptions = { T, qPos0: n - T, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.15 };
    poison(O.v);
    attention(k, O.ptr, Q.ptr, kc, vc, o);
    expect(maxRelErr(O.v, attentionRef(q, K, V, { ...o, sinks: undefined }))).toBeLessThan(1e-5);
  });

  it('non-causal attention over kvLen keys, q and cache strides (MLA-style V = prefix of K rows)', async () => {
    const k = await kernels(build);
    const r = rng(5);
    const T = 6, Hq = 4, D = 24, Dv = 16, n = 19;
    // One kv head whose K row is [c (16) | rope (8)] and V is the first 16 floats of the same row.
    const q = randn(T * Hq * 2 * D, r), Kr = randn(n * D, r, 1.5);
    const Q = k.arena.putF32(q), Kc = k.arena.putF32(Kr), O = k.arena.f32buf(T * Hq * Dv);
    poison(O.v);
    attention(k, O.ptr, Q.ptr, Kc.ptr, Kc.ptr, { T, qPos0: 0, nHeads: Hq, nKv: 1, headDim: D, vDim: Dv, scale: 0.2, causal: false, kvLen: n, qHeadStride: 2 * D, vStride: D });
    const qc = new Float32Array(T * Hq * D);
    for (let i = 0; i < T * Hq; i++) qc.set(q.subarray(i * 2 * D, i * 2 * D + D), i * D);
    const V = new Float32Array(n * Dv);
    for (let p = 0; p < n; p++) V.set(Kr.subarray(p * D, p * D + Dv), p * Dv);
    const want = attentionRef(qc, Kr, V, { T, qPos0: 0, nHeads: Hq, nKv: 1, headDim: D, vDim: Dv, scale: 0.2, causal: false, kvLen: n });
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
  });

  it.each([
    [1, 1, 8, 8, 5, false], [4, 2, 17, 17, 33, false], [8, 2, 64, 32, 64, true], [6, 1, 64, 64, 1, true], [3, 3, 17, 8, 9, true],
  ])('attendSelected Hq=%i Hkv=%i D=%i Dv=%i m=%i per-kv-head lists=%s, sinks and softcap', async (Hq, Hkv, D, Dv, m, perHead) => {
    const k = await kernels(build);
    const r = rng(Hq * 10 + m);
    const slots = 120;
    const q = randn(Hq * D, r, 1.5), K = randn(slots * Hkv * D, r, 1.5), V = randn(slots * Hkv * Dv, r);
    const lists = perHead ? Hkv : 1, stride = perHead ? m + 3 : 0;
    const idx = new Int32Array(Math.max(1, lists * Math.max(stride, m)));
    for (let g = 0; g < lists; g++) {
      const pick = new Set<number>();
      while (pick.size < m) pick.add(Math.floor(r() * slots));
      Array.from(pick).forEach((s, j) => (idx[g * stride + j] = s));
    }
    const sinks = randn(Hq, r, 2);
    const Q = k.arena.putF32(q), Kc = k.arena.putF32(K), Vc = k.arena.putF32(V), S = k.arena.putF32(sinks), O = k.arena.f32buf(Hq * Dv);
    const I = k.arena.alloc(idx.length * 4);
    k.arena.i32(I, idx.length).set(idx);
    const o = { nHeads: Hq, nKv: Hkv, headDim: D, vDim: Dv, scale: 0.3, idxStride: stride };
    poison(O.v);
    attendSelected(k, O.ptr, Q.ptr, Kc.ptr, Vc.ptr, I, m, o);
    expect(maxRelErr(O.v, attendSelectedRef(q, K, V, idx, m, o))).toBeLessThan(1e-5);
    poison(O.v);
    attendSelected(k, O.ptr, Q.ptr, Kc.ptr, Vc.ptr, I, m, { ...o, sinks: S.ptr, softcap: 3 });
    expect(maxRelErr(O.v, attendSelectedRef(q, K, V, idx, m, { ...o, sinks, softcap: 3 }))).toBeLessThan(1e-5);
  });

  it('attendSelected over every slot 0..n−1 equals dense decode attention', async () => {
    const k = await kernels(build);
    const r = rng(8);
    const Hq = 8, Hkv = 2, D = 64, n = 77;
    const q = randn(Hq * D, r, 1.5), K = randn(n * Hkv * D, r, 1.5), V = randn(n * Hkv * D, r);
    const Q = k.arena.putF32(q), Kc = k.arena.putF32(K), Vc = k.arena.putF32(V), A = k.arena.f32buf(Hq * D), B = k.arena.f32buf(Hq * D);
    const I = k.arena.alloc(n * 4);
    k.arena.i32(I, n).set(Int32Array.from({ length: n }, (_, i) => i));
    attendSelected(k, A.ptr, Q.ptr, Kc.ptr, Vc.ptr, I, n, { nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.125 });
    attention(k, B.ptr, Q.ptr, Kc.ptr, Vc.ptr, { T: 1, qPos0: n - 1, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.125 });
    expect(maxRelErr(A.v, B.v)).toBeLessThan(1e-6);
  });
});

describe.each(BUILDS)('sparse-attention selection (%s build)', (build) => {
  it.each([1, 2, 7, 33, 257, 5000])('topkSelect n=%i against a sort, with many ties, −Infinity and topk ≥ n', async (n) => {
    const k = await kernels(build);
    const r = rng(n);
    const cases: Float32Array[] = [
      randn(n, r, 100),
      Float32Array.from({ length: n }, () => Math.floor(r() * 4) - 2), // heavy ties incl. -0/0 free integers
      Float32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -Infinity : r() - 0.5)),
      new Float32Array(n).fill(1.25),
      Float32Array.from({ length: n }, () => (r() < 0.5 ? -3e38 : 3e38)),
    ];
    const S = k.arena.f32buf(n), I = k.arena.alloc(n * 4);
    for (const s of cases) {
      S.v.set(s);
      for (const topk of [0, 1, 2, Math.floor(n / 3), n - 1, n, n + 5]) {
        if (topk < 0) continue;
        k.arena.i32(I, n).fill(-7);
        const got = topkSelect(k, I, S.ptr, n, topk);
        const want = topkRef(s, topk);
        expect(got).toBe(want.length);
        expect(Array.from(k.arena.i32(I, got))).toEqual(want);
      }
    }
  });

  it.each([[1, 1, 8, 1], [5, 2, 17, 4], [12, 4, 64, 8]])('Quest: page min/max and page scores (nPages=%i nKv=%i D=%i Hq=%i)', async (nPages, nKv, D, Hq) => {
    const k = await kernels(build);
    const r = rng(nPages * 7 + D);
    const P = 16, n = nPages * P - 5; // last page partly filled
    const K = randn(Math.max(n, 1) * nKv * D, r, 2), q = randn(Hq * D, r);
    const Kc = k.arena.putF32(K), Q = k.arena.putF32(q);
    const mn = k.arena.f32buf(nPages * nKv * D), mx = k.arena.f32buf(nPages * nKv * D), out = k.arena.f32buf(nKv * nPages);
    poison(mn.v);
    poison(mx.v);
    for (let p = 0; p < nPages; p++) questUpdatePage(k, mn.ptr, mx.ptr, Kc.ptr, p, P, Math.min(P, n - p * P), nKv, D);
    for (let p = 0; p < nPages; p++) {
      for (let g = 0; g < nKv; g++) {
        for (let d = 0; d < D; d++) {
          let a = Infinity, b = -Infinity;
          for (let j = p * P; j < Math.min(n, (p + 1) * P); j++) {
            a = Math.min(a, K[(j * nKv + g) * D + d]);
            b = Math.max(b, K[(j * nKv + g) * D + d]);
          }
          expect(mn.v[(p * nKv + g) * D + d]).toBe(a);
          expect(mx.v[(p * nKv + g) * D + d]).toBe(b);
        }
      }
    }
    poison(out.v);
    questPageScores(k, out.ptr, Q.ptr, mn.ptr, mx.ptr, nPages, nKv, D, Hq);
    const want = questPageScoresRef(q, mn.v, mx.v, nPages, nKv, D, Hq);
    expect(maxRelErr(out.v, want)).toBeLessThan(1e-5);
    // The score bounds the group's summed q·k of every key in the page.
    const G = Hq / nKv;
    for (let g = 0; g < nKv; g++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let h = g * G; h < (g + 1) * G; h++) for (let d = 0; d < D; d++) s += q[h * D + d] * K[(j * nKv + g) * D + d];
        expect(out.v[g * nPages + Math.floor(j / P)]).toBeGreaterThanOrEqual(s - 1e-4);
      }
    }
  });

  it.each([[1, 1, 8], [7, 3, 17], [300, 64, 128], [33, 5, 64]])('DSA indexer scores n=%i Hi=%i Di=%i match HF DeepseekV32Indexer', async (n, Hi, Di) => {
    const k = await kernels(build);
    const r = rng(n + Hi);
    const qI = randn(Hi * Di, r), wI = randn(Hi, r, 2), kI = randn(n * Di, r);
    const Q = k.arena.putF32(qI), W = k.arena.putF32(wI), Kc = k.arena.putF32(kI), O = k.arena.f32buf(n);
    poison(O.v);
    dsaIndexerScores(k, O.ptr, Q.ptr, W.ptr, Kc.ptr, n, Hi, Di);
    expect(maxRelErr(O.v, dsaIndexerScoresRef(qI, wI, kI, n, Hi, Di))).toBeLessThan(1e-5);
  });
});
