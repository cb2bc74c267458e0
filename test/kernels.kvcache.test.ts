import { describe, expect, it } from 'vitest';
import { attendSelected, attention, type AttentionOptions } from '../src/kernels/attention';
import { attendSelectedRef, attentionRef } from '../src/kernels/attention.ref';
import { kvHeadBytes, kvRowBytes, quantizeKvRows } from '../src/kernels/kvcache';
import { dequantKvRowsRef, quantizeKvRowsRef } from '../src/kernels/kvcache.ref';
import type { K } from '../src/kernels/types';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Attention over a quantized cache is compared with the float64 reference over the values the cache
// holds (the reference dequantization of its bytes), so quantization error does not enter: the
// kernel widens the same integers and applies the same f16 scales, in another order. Tolerance as
// for the f32 kernel: ≤ 1e-5 relative.

const TYPES = ['q8_0', 'q4_0'] as const;
type QType = (typeof TYPES)[number];

/** Quantizes keys/values given by absolute position into cache rows (linear, or a ring of `capacity` slots). */
function fillQuantCache(k: K, type: QType, kc: number, vc: number, K: Float32Array, V: Float32Array, from: number, to: number, nKv: number, D: number, Dv: number, capacity = 0): void {
  const kr = kvRowBytes(type, nKv, D), vr = kvRowBytes(type, nKv, Dv);
  const kb = quantizeKvRowsRef(type, K.subarray(from * nKv * D, to * nKv * D), to - from, nKv, D);
  const vb = quantizeKvRowsRef(type, V.subarray(from * nKv * Dv, to * nKv * Dv), to - from, nKv, Dv);
  for (let p = from; p < to; p++) {
    const s = capacity ? p % capacity : p;
    k.arena.u8(kc + s * kr, kr).set(kb.subarray((p - from) * kr, (p - from + 1) * kr));
    k.arena.u8(vc + s * vr, vr).set(vb.subarray((p - from) * vr, (p - from + 1) * vr));
  }
}

/** What a cache of this type holds for K: the reference round trip. */
function held(type: QType, X: Float32Array, n: number, heads: number, D: number): Float32Array {
  return dequantKvRowsRef(type, quantizeKvRowsRef(type, X, n, heads, D), n, heads, D);
}

interface Case { T: number; qPos0: number; Hq: number; Hkv: number; D: number; Dv: number; window?: number; softcap?: number; sinks?: boolean }

const CASES: Case[] = [
  { T: 1, qPos0: 0, Hq: 1, Hkv: 1, D: 8, Dv: 8 },
  { T: 5, qPos0: 0, Hq: 4, Hkv: 4, D: 17, Dv: 17 },
  { T: 5, qPos0: 11, Hq: 4, Hkv: 2, D: 17, Dv: 8 },
  { T: 33, qPos0: 0, Hq: 8, Hkv: 2, D: 64, Dv: 64 },
  { T: 33, qPos0: 7, Hq: 4, Hkv: 1, D: 64, Dv: 32 },
  { T: 1, qPos0: 200, Hq: 6, Hkv: 1, D: 72, Dv: 72 },
  { T: 1, qPos0: 90, Hq: 8, Hkv: 2, D: 40, Dv: 24 },
  { T: 1, qPos0: 150, Hq: 5, Hkv: 5, D: 128, Dv: 128 },
  { T: 33, qPos0: 3, Hq: 3, Hkv: 1, D: 8, Dv: 8, window: 9 },
  { T: 5, qPos0: 40, Hq: 4, Hkv: 2, D: 64, Dv: 64, window: 16, softcap: 50 },
  { T: 17, qPos0: 0, Hq: 4, Hkv: 4, D: 35, Dv: 35, softcap: 2 },
  { T: 7, qPos0: 13, Hq: 8, Hkv: 2, D: 96, Dv: 96, sinks: true },
  { T: 1, qPos0: 300, Hq: 2, Hkv: 1, D: 16, Dv: 16, sinks: true, window: 128 },
];

describe('quantizeKvRows', () => {
  it.each(BUILDS.flatMap((b) => TYPES.flatMap((t) => [
    [b, t, 1, 1, 32], [b, t, 5, 3, 17], [b, t, 3, 2, 40], [b, t, 4, 1, 8], [b, t, 2, 4, 64], [b, t, 7, 3, 72], [b, t, 2, 1, 1],
  ] as const)))('%s %s: rows=%i heads=%i D=%i equals the reference byte for byte (padding zeroed)', async (build, type, rows, heads, D) => {
    const k = await kernels(build);
    const r = rng(rows * 100 + heads * 10 + D);
    const srcStride = heads * D + 3;
    const x = randn(rows * srcStride, r, 2);
    // A few exact zeros, ties and a large value, as activations have.
    x[0] = 0;
    x[1] = 0.5;
    if (x.length > 5) x[5] = -7.25;
    const X = k.arena.putF32(x);
    const rb = kvRowBytes(type, heads, D);
    const dst = k.arena.alloc(rows * rb);
    k.arena.u8(dst, rows * rb).fill(0xab);
    quantizeKvRows(k, type, dst, X.ptr, rows, heads, D, { srcStride });
    const dense = new Float32Array(rows * heads * D);
    for (let t = 0; t < rows; t++) dense.set(x.subarray(t * srcStride, t * srcStride + heads * D), t * heads * D);
    expect(Array.from(k.arena.u8(dst, rows * rb))).toEqual(Array.from(quantizeKvRowsRef(type, dense, rows, heads, D)));
  });

  it('sizes: Q8_0 34 B and Q4_0 18 B per 32 values, heads padded to whole blocks, rows to 4 bytes', () => {
    expect(kvHeadBytes('q8_0', 128)).toBe(136);
    expect(kvHeadBytes('q4_0', 128)).toBe(72);
    expect(kvHeadBytes('q8_0', 17)).toBe(34);
    expect(kvRowBytes('q8_0', 1, 17)).toBe(36);
    expect(kvRowBytes('q4_0', 3, 40)).toBe(108);
    expect(kvRowBytes('f32', 2, 64)).toBe(512);
  });
});

describe.each(BUILDS)('attention over a quantized cache (%s build)', (build) => {
  it.each(TYPES.flatMap((type) => CASES.map((c) => ({ type, ...c }))))('$type T=$T qPos0=$qPos0 Hq=$Hq Hkv=$Hkv D=$D Dv=$Dv window=$window softcap=$softcap sinks=$sinks', async (c) => {
    const k = await kernels(build);
    const r = rng(c.T * 1000 + c.qPos0 * 7 + c.Hq * 31 + c.D);
    const n = c.qPos0 + c.T;
    const q = randn(c.T * c.Hq * c.D, r, 1.5), K = randn(n * c.Hkv * c.D, r, 1.5), V = randn(n * c.Hkv * c.Dv, r);
    const sinks = c.sinks ? randn(c.Hq, r, 3) : undefined;
    const Q = k.arena.putF32(q), O = k.arena.f32buf(c.T * c.Hq * c.Dv);
    const kc = k.arena.alloc(n * kvRowBytes(c.type, c.Hkv, c.D)), vc = k.arena.alloc(n * kvRowBytes(c.type, c.Hkv, c.Dv));
    fillQuantCache(k, c.type, kc, vc, K, V, 0, n, c.Hkv, c.D, c.Dv);
    const S = sinks ? k.arena.putF32(sinks).ptr : undefined;
    const o: AttentionOptions = { T: c.T, qPos0: c.qPos0, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale: 1 / Math.sqrt(c.D), window: c.window, softcap: c.softcap, sinks: S, cache: c.type };
    poison(O.v);
    attention(k, O.ptr, Q.ptr, kc, vc, o);
    const want = attentionRef(q, held(c.type, K, n, c.Hkv, c.D), held(c.type, V, n, c.Hkv, c.Dv), { ...o, sinks });
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
  });

  it.each(TYPES)('%s: prefill of T tokens = T single decode steps; ring decode over 300 positions', async (type) => {
    const k = await kernels(build);
    const r = rng(77);
    const Hq = 6, Hkv = 2, D = 40, T = 21, q0 = 4, n = q0 + T;
    const q = randn(T * Hq * D, r, 1.5), K = randn(n * Hkv * D, r, 1.5), V = randn(n * Hkv * D, r);
    const Q = k.arena.putF32(q), A = k.arena.f32buf(T * Hq * D), B = k.arena.f32buf(T * Hq * D), S = k.arena.putF32(randn(Hq, r, 2));
    const rb = kvRowBytes(type, Hkv, D);
    const kc = k.arena.alloc(n * rb), vc = k.arena.alloc(n * rb);
    fillQuantCache(k, type, kc, vc, K, V, 0, n, Hkv, D, D);
    const base = { nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.3, window: 6, sinks: S.ptr, cache: type };
    poison(A.v);
    poison(B.v);
    attention(k, A.ptr, Q.ptr, kc, vc, { ...base, T, qPos0: q0 });
    for (let t = 0; t < T; t++) attention(k, B.ptr + t * Hq * D * 4, Q.ptr + t * Hq * D * 4, kc, vc, { ...base, T: 1, qPos0: q0 + t });
    expect(maxRelErr(A.v, B.v)).toBeLessThan(2e-6);

    const N = 300, W = 37;
    const q2 = randn(N * Hq * D, r, 1.5), K2 = randn(N * Hkv * D, r, 1.5), V2 = randn(N * Hkv * D, r);
    const Q2 = k.arena.putF32(q2), O = k.arena.f32buf(Hq * D);
    const kr = k.arena.alloc(W * rb), vr = k.arena.alloc(W * rb);
    const want = attentionRef(q2, held(type, K2, N, Hkv, D), held(type, V2, N, Hkv, D), { T: N, qPos0: 0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.2, window: W });
    let worst = 0;
    for (let p = 0; p < N; p++) {
      fillQuantCache(k, type, kr, vr, K2, V2, p, p + 1, Hkv, D, D, W);
      poison(O.v);
      attention(k, O.ptr, Q2.ptr + p * Hq * D * 4, kr, vr, { T: 1, qPos0: p, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.2, window: W, capacity: W, cache: type });
      worst = Math.max(worst, maxRelErr(O.v, want.subarray(p * Hq * D, (p + 1) * Hq * D)));
    }
    expect(worst).toBeLessThan(1e-5);
  });

  it.each(TYPES)('%s: long context (many key blocks), with and without scratch, and the threads build', async (type) => {
    const r = rng(11);
    const T = 3, Hq = 6, Hkv = 2, D = 64, n = 1300;
    const q = randn(T * Hq * D, r, 1.5), K = randn(n * Hkv * D, r, 1.5), V = randn(n * Hkv * D, r);
    const sinks = randn(Hq, r, 2);
    const want = attentionRef(q, held(type, K, n, Hkv, D), held(type, V, n, Hkv, D), { T, qPos0: n - T, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.15, sinks });
    for (const b of [build, 'threads'] as const) {
      const k = await kernels(b);
      const Q = k.arena.putF32(q), O = k.arena.f32buf(T * Hq * D), S = k.arena.putF32(sinks), X = k.arena.f32buf(2 * (T * Hq + 4));
      const rb = kvRowBytes(type, Hkv, D);
      const kc = k.arena.alloc(n * rb), vc = k.arena.alloc(n * rb);
      fillQuantCache(k, type, kc, vc, K, V, 0, n, Hkv, D, D);
      const o: AttentionOptions = { T, qPos0: n - T, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.15, sinks: S.ptr, cache: type };
      poison(O.v);
      attention(k, O.ptr, Q.ptr, kc, vc, o);
      expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
      poison(O.v);
      attention(k, O.ptr, Q.ptr, kc, vc, { ...o, scratch: X.ptr });
      expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
    }
  });

  it.each(TYPES)('%s: MLA-style latent rows (V = the first Dv values of each K row), non-causal, q strides', async (type) => {
    const k = await kernels(build);
    const r = rng(5);
    const T = 6, Hq = 4, D = 24, Dv = 16, n = 19;
    const q = randn(T * Hq * 2 * D, r), Kr = randn(n * D, r, 1.5);
    const rb = kvRowBytes(type, 1, D);
    const kc = k.arena.alloc(n * rb);
    k.arena.u8(kc, n * rb).set(quantizeKvRowsRef(type, Kr, n, 1, D));
    const Q = k.arena.putF32(q), O = k.arena.f32buf(T * Hq * Dv);
    poison(O.v);
    attention(k, O.ptr, Q.ptr, kc, kc, { T, qPos0: 0, nHeads: Hq, nKv: 1, headDim: D, vDim: Dv, scale: 0.2, causal: false, kvLen: n, qHeadStride: 2 * D, kStride: rb, vStride: rb, cache: type });
    const qc = new Float32Array(T * Hq * D);
    for (let i = 0; i < T * Hq; i++) qc.set(q.subarray(i * 2 * D, i * 2 * D + D), i * D);
    const Kh = held(type, Kr, n, 1, D);
    const V = new Float32Array(n * Dv);
    for (let p = 0; p < n; p++) V.set(Kh.subarray(p * D, p * D + Dv), p * Dv);
    const want = attentionRef(qc, Kh, V, { T, qPos0: 0, nHeads: Hq, nKv: 1, headDim: D, vDim: Dv, scale: 0.2, causal: false, kvLen: n });
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
  });

  it.each(TYPES.flatMap((t) => [
    [t, 1, 1, 8, 8, 5, false], [t, 4, 2, 17, 17, 33, false], [t, 8, 2, 64, 32, 64, true], [t, 6, 1, 64, 64, 1, true], [t, 3, 3, 40, 8, 9, true],
  ] as const))('%s attendSelected Hq=%i Hkv=%i D=%i Dv=%i m=%i per-kv-head lists=%s, sinks and softcap', async (type, Hq, Hkv, D, Dv, m, perHead) => {
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
    const kc = k.arena.alloc(slots * kvRowBytes(type, Hkv, D)), vc = k.arena.alloc(slots * kvRowBytes(type, Hkv, Dv));
    fillQuantCache(k, type, kc, vc, K, V, 0, slots, Hkv, D, Dv);
    const Q = k.arena.putF32(q), S = k.arena.putF32(sinks), O = k.arena.f32buf(Hq * Dv);
    const I = k.arena.alloc(idx.length * 4);
    k.arena.i32(I, idx.length).set(idx);
    const o = { nHeads: Hq, nKv: Hkv, headDim: D, vDim: Dv, scale: 0.3, idxStride: stride };
    const Kh = held(type, K, slots, Hkv, D), Vh = held(type, V, slots, Hkv, Dv);
    poison(O.v);
    attendSelected(k, O.ptr, Q.ptr, kc, vc, I, m, { ...o, cache: type });
    expect(maxRelErr(O.v, attendSelectedRef(q, Kh, Vh, idx, m, o))).toBeLessThan(1e-5);
    poison(O.v);
    attendSelected(k, O.ptr, Q.ptr, kc, vc, I, m, { ...o, sinks: S.ptr, softcap: 3, cache: type });
    expect(maxRelErr(O.v, attendSelectedRef(q, Kh, Vh, idx, m, { ...o, sinks, softcap: 3 }))).toBeLessThan(1e-5);
  });

  it('refuses an unknown cache type and quantized strides that are no multiple of 4 bytes', async () => {
    const k = await kernels(build);
    const Q = k.arena.f32buf(64), O = k.arena.f32buf(64), C = k.arena.alloc(4096);
    const o: AttentionOptions = { T: 1, qPos0: 0, nHeads: 1, nKv: 1, headDim: 32, vDim: 32, scale: 1 };
    expect(() => attention(k, O.ptr, Q.ptr, C, C, { ...o, cache: 'q5_0' as never })).toThrow(/cache must be f32, q8_0 or q4_0/);
    expect(() => attention(k, O.ptr, Q.ptr, C, C, { ...o, cache: 'q8_0', kStride: 34 })).toThrow(/multiples of 4/);
  });
});
