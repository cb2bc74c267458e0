// Sparse top-k attention at decode (Quest pages): page bounds kept as keys are appended, and one
// query's attention over sinks ∪ top pages ∪ window, against float64 references at odd sizes with
// poisoned outputs, over f32 and quantized caches.
import { describe, expect, it } from 'vitest';
import { attention, questAppendKeys, questAttend, questScratchBytes } from '../src/kernels/attention';
import { attendSelectedRef, questBoundsRef, questSelectRef } from '../src/kernels/attention.ref';
import { kvRowBytes, quantizeKvRows, type KvCacheType } from '../src/kernels/kvcache';
import { dequantKvRowsRef } from '../src/kernels/kvcache.ref';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

describe.each(BUILDS)('questAppendKeys (%s build)', (build) => {
  it.each([
    [1, 1, 8, 1, 7], [5, 2, 17, 3, 45], [16, 3, 9, 64, 200], [7, 4, 64, 13, 97],
  ])('pageSize %i nKv %i D %i in chunks of %i, %i positions: equals bounds from scratch', async (P, nKv, D, chunk, n) => {
    const k = await kernels(build);
    const r = rng(P * 131 + D * 7 + n);
    const W = nKv * D, maxPages = Math.ceil(n / P) + 2;
    const K = randn(n * W, r, 2);
    const mn = k.arena.f32buf(maxPages * W), mx = k.arena.f32buf(maxPages * W), keys = k.arena.putF32(K);
    poison(mn.v);
    poison(mx.v);
    for (let p0 = 0; p0 < n; p0 += chunk) {
      const T = Math.min(chunk, n - p0);
      questAppendKeys(k, mn.ptr, mx.ptr, keys.ptr + p0 * W * 4, T, p0, P, maxPages, nKv, D);
    }
    const want = questBoundsRef(K, n, P, nKv, D);
    expect(Array.from(mn.v.subarray(0, want.kMin.length))).toEqual(Array.from(want.kMin));
    expect(Array.from(mx.v.subarray(0, want.kMax.length))).toEqual(Array.from(want.kMax));
  });

  it('a page entered after a rewind keeps bounds that still hold its keys', async () => {
    const k = await kernels(build);
    const r = rng(5);
    const P = 8, nKv = 2, D = 5, W = nKv * D, n = 20;
    const K = randn(n * W, r), K2 = randn(n * W, r);
    const mn = k.arena.f32buf(4 * W), mx = k.arena.f32buf(4 * W);
    questAppendKeys(k, mn.ptr, mx.ptr, k.arena.putF32(K).ptr, n, 0, P, 4, nKv, D);
    // Rewind to 11 and append other keys at 11 … 19.
    questAppendKeys(k, mn.ptr, mx.ptr, k.arena.putF32(K2.subarray(11 * W)).ptr, n - 11, 11, P, 4, nKv, D);
    const now = new Float32Array(K);
    now.set(K2.subarray(11 * W), 11 * W);
    const want = questBoundsRef(now, n, P, nKv, D);
    for (let i = 0; i < want.kMin.length; i++) {
      expect(mn.v[i]).toBeLessThanOrEqual(want.kMin[i]);
      expect(mx.v[i]).toBeGreaterThanOrEqual(want.kMax[i]);
    }
    // Page 2 (16 … 19) started after the rewind: exact.
    for (let i = 2 * W; i < 3 * W; i++) expect(mn.v[i]).toBe(want.kMin[i]);
  });

  it('refuses a position past the bounds arrays', async () => {
    const k = await kernels(build);
    const mn = k.arena.f32buf(2 * 4), mx = k.arena.f32buf(2 * 4), keys = k.arena.f32buf(4);
    expect(() => questAppendKeys(k, mn.ptr, mx.ptr, keys.ptr, 1, 8, 4, 2, 1, 4)).toThrow(/past the 2 pages/);
  });
});

interface Case { pos: number; Hq: number; Hkv: number; D: number; Dv: number; P: number; pages: number; sinks: number; window: number; cache?: KvCacheType; softcap?: number; sinkLogits?: boolean }

const CASES: Case[] = [
  { pos: 100, Hq: 4, Hkv: 2, D: 17, Dv: 9, P: 7, pages: 3, sinks: 3, window: 11 },
  { pos: 257, Hq: 6, Hkv: 3, D: 32, Dv: 32, P: 16, pages: 4, sinks: 4, window: 20 },
  { pos: 333, Hq: 8, Hkv: 1, D: 64, Dv: 64, P: 32, pages: 2, sinks: 0, window: 1 },
  { pos: 190, Hq: 5, Hkv: 5, D: 24, Dv: 40, P: 5, pages: 9, sinks: 13, window: 6, softcap: 3 },
  { pos: 211, Hq: 4, Hkv: 2, D: 64, Dv: 64, P: 16, pages: 3, sinks: 4, window: 17, sinkLogits: true },
  { pos: 150, Hq: 4, Hkv: 2, D: 32, Dv: 64, P: 9, pages: 4, sinks: 2, window: 10, cache: 'q8_0' },
  { pos: 170, Hq: 6, Hkv: 3, D: 32, Dv: 32, P: 8, pages: 5, sinks: 4, window: 9, cache: 'q4_0' },
  // Covering budgets: dense attention.
  { pos: 40, Hq: 4, Hkv: 2, D: 17, Dv: 9, P: 7, pages: 3, sinks: 3, window: 20 },
  { pos: 63, Hq: 4, Hkv: 2, D: 32, Dv: 32, P: 16, pages: 2, sinks: 0, window: 32, cache: 'q8_0' },
];

describe.each(BUILDS)('questAttend (%s build)', (build) => {
  it.each(CASES)('pos $pos Hq $Hq Hkv $Hkv D $D Dv $Dv page $P ×$pages sinks $sinks window $window $cache', async (c) => {
    const k = await kernels(build);
    const r = rng(c.pos * 17 + c.Hq * 5 + c.D);
    const n = c.pos + 1, cache = c.cache ?? 'f32';
    const q = randn(c.Hq * c.D, r, 1.5), K = randn(n * c.Hkv * c.D, r, 1.5), V = randn(n * c.Hkv * c.Dv, r);
    // Keys drift by position so that pages differ in score.
    for (let p = 0; p < n; p++) for (let i = 0; i < c.Hkv * c.D; i++) K[p * c.Hkv * c.D + i] += Math.sin(p / 9 + i) * 1.5;
    const maxPages = Math.ceil(n / c.P) + 1;
    const mn = k.arena.f32buf(maxPages * c.Hkv * c.D), mx = k.arena.f32buf(maxPages * c.Hkv * c.D);
    questAppendKeys(k, mn.ptr, mx.ptr, k.arena.putF32(K).ptr, n, 0, c.P, maxPages, c.Hkv, c.D);
    let kc: number, vc: number, Kr: ArrayLike<number> = K, Vr: ArrayLike<number> = V;
    let strides = {};
    if (cache === 'f32') {
      kc = k.arena.putF32(K).ptr;
      vc = k.arena.putF32(V).ptr;
    } else {
      const kb = kvRowBytes(cache, c.Hkv, c.D), vb = kvRowBytes(cache, c.Hkv, c.Dv);
      kc = k.arena.alloc(n * kb);
      vc = k.arena.alloc(n * vb);
      quantizeKvRows(k, cache, kc, k.arena.putF32(K).ptr, n, c.Hkv, c.D);
      quantizeKvRows(k, cache, vc, k.arena.putF32(V).ptr, n, c.Hkv, c.Dv);
      Kr = dequantKvRowsRef(cache, k.arena.u8(kc, n * kb).slice(), n, c.Hkv, c.D);
      Vr = dequantKvRowsRef(cache, k.arena.u8(vc, n * vb).slice(), n, c.Hkv, c.Dv);
      strides = { cache, kStride: kb, vStride: vb };
    }
    const sinkLogits = c.sinkLogits ? randn(c.Hq, r, 2) : undefined;
    const o = {
      pos: c.pos, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale: 1 / Math.sqrt(c.D), softcap: c.softcap,
      sinks: sinkLogits ? k.arena.putF32(sinkLogits).ptr : undefined,
      pageSize: c.P, pages: c.pages, sinkPositions: c.sinks, window: c.window, maxPages, ...strides,
    };
    const scratch = k.arena.alloc(questScratchBytes({ nKv: c.Hkv, maxPages, pages: c.pages, pageSize: c.P, sinkPositions: c.sinks, window: c.window }));
    const Q = k.arena.putF32(q), O = k.arena.f32buf(c.Hq * c.Dv);
    poison(O.v);
    questAttend(k, O.ptr, Q.ptr, kc, vc, mn.ptr, mx.ptr, scratch, o);
    // Selection from f32 keys' bounds (the cache's keys before rounding), attention over the cache.
    const lists = questSelectRef(q, K, c.pos, { nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, pageSize: c.P, pages: c.pages, sinks: c.sinks, window: c.window });
    const budget = c.sinks + c.window + c.pages * c.P;
    if (n > budget) for (const l of lists) expect(l.length).toBeLessThanOrEqual(budget);
    const G = c.Hq / c.Hkv;
    const want = new Float64Array(c.Hq * c.Dv);
    for (let g = 0; g < c.Hkv; g++) {
      const qg = q.subarray(g * G * c.D, (g + 1) * G * c.D);
      const Kg = new Float64Array(n * c.D), Vg = new Float64Array(n * c.Dv);
      for (let p = 0; p < n; p++) {
        for (let i = 0; i < c.D; i++) Kg[p * c.D + i] = Kr[(p * c.Hkv + g) * c.D + i];
        for (let i = 0; i < c.Dv; i++) Vg[p * c.Dv + i] = Vr[(p * c.Hkv + g) * c.Dv + i];
      }
      const part = attendSelectedRef(qg, Kg, Vg, lists[g], lists[g].length, {
        nHeads: G, nKv: 1, headDim: c.D, vDim: c.Dv, scale: o.scale, softcap: c.softcap, sinks: sinkLogits?.subarray(g * G, (g + 1) * G),
      });
      want.set(part, g * G * c.Dv);
    }
    expect(maxRelErr(O.v, want)).toBeLessThan(2e-5);
    if (n <= budget) {
      // Covering budget: the dense kernel's result, bit for bit.
      const D2 = k.arena.f32buf(c.Hq * c.Dv);
      attention(k, D2.ptr, Q.ptr, kc, vc, { T: 1, qPos0: c.pos, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale: o.scale, softcap: c.softcap, sinks: o.sinks, ...strides });
      expect(Array.from(O.v)).toEqual(Array.from(D2.v));
    }
  });
});
