import { describe, expect, it } from 'vitest';
import { route, type RouteOptions } from '../src/kernels/moe';
import { routeRef } from '../src/kernels/moe.ref';
import { BUILDS, kernels, maxRelErr, randn, rng } from './helpers';

// Ids must match exactly (distinct random logits); weights within 1e-5 relative (f32 exp and sums).

const CASES: [string, number, number, RouteOptions][] = [
  ['Mixtral softmax→top-2→renorm', 8, 2, { mode: 'softmax_topk', renormalize: true }],
  ['Qwen2-MoE / OLMoE softmax→top-k, no renorm', 60, 4, { mode: 'softmax_topk' }],
  ['Qwen3-MoE norm_topk_prob', 128, 8, { mode: 'softmax_topk', renormalize: true }],
  ['gpt-oss top-k→softmax', 32, 4, { mode: 'topk_softmax' }],
  ['top-1 softmax', 7, 1, { mode: 'topk_softmax' }],
  ['sigmoid, no groups, scaled', 16, 3, { mode: 'sigmoid', renormalize: true, routedScaling: 1.5 }],
  ['DeepSeek-V3 noaux_tc 8 groups keep 4', 64, 8, { mode: 'sigmoid', renormalize: true, nGroup: 8, topkGroup: 4, routedScaling: 2.5 }],
  ['DeepSeek-V3 without norm', 32, 6, { mode: 'sigmoid', nGroup: 4, topkGroup: 2, routedScaling: 2.5 }],
  ['GLM-style −inf mask fill', 32, 6, { mode: 'sigmoid', renormalize: true, nGroup: 4, topkGroup: 2, maskFill: -Infinity }],
];

describe.each(BUILDS)('MoE routing (%s build)', (build) => {
  for (const [name, E, K, o] of CASES) {
    it.each([1, 5, 33])(`${name}: E=${E} k=${K} T=%i`, async (T) => {
      const kk = await kernels(build);
      const r = rng(T * 7 + E + K);
      const logits = randn(T * E, r, 4);
      const bias = o.mode === 'sigmoid' ? randn(E, r, 0.8) : undefined;
      const L = kk.arena.putF32(logits);
      const Ids = kk.arena.alloc(T * K * 4), W = kk.arena.f32buf(T * K);
      kk.arena.i32(Ids, T * K).fill(-1);
      W.v.fill(NaN);
      const opts = { ...o, bias: bias ? kk.arena.putF32(bias).ptr : undefined };
      route(kk, Ids, W.ptr, L.ptr, T, E, K, opts);
      const want = routeRef(logits, T, E, K, { ...o, bias });
      expect(Array.from(kk.arena.i32(Ids, T * K))).toEqual(want.ids.flat());
      expect(maxRelErr(W.v, want.w.flat())).toBeLessThan(1e-5);
      // Weights are in descending order per token.
      for (let t = 0; t < T; t++) for (let j = 1; j < K; j++) expect(W.v[t * K + j]).toBeLessThanOrEqual(W.v[t * K + j - 1]);
    });
  }

  it('negative biased scores: masked experts win with HF DeepseekV3 fill 0.0, never with −Infinity', async () => {
    const kk = await kernels(build);
    const E = 8, K = 3;
    const logits = Float32Array.from([0.5, 0.4, 0.3, 0.2, -1, -2, -3, -4]);
    // Bias pushes every biased score negative; group 0 (experts 0-3) wins, group 1 is masked.
    const bias = new Float32Array(E).fill(-2);
    const L = kk.arena.putF32(logits), B = kk.arena.putF32(bias), Ids = kk.arena.alloc(K * 4), W = kk.arena.f32buf(K);
    for (const maskFill of [0, -Infinity]) {
      route(kk, Ids, W.ptr, L.ptr, 1, E, K, { mode: 'sigmoid', renormalize: true, bias: B.ptr, nGroup: 2, topkGroup: 1, maskFill });
      const want = routeRef(logits, 1, E, K, { mode: 'sigmoid', renormalize: true, bias, nGroup: 2, topkGroup: 1, maskFill });
      expect(Array.from(kk.arena.i32(Ids, K))).toEqual(want.ids[0]);
      expect(maxRelErr(W.v, want.w[0])).toBeLessThan(1e-5);
      if (maskFill === 0) expect(want.ids[0].some((i) => i >= 4)).toBe(true);
      else expect(want.ids[0].every((i) => i < 4)).toBe(true);
    }
  });

  it('ties pick the lowest expert id', async () => {
    const kk = await kernels(build);
    const logits = Float32Array.from([1, 3, 3, 0, 3, 2]);
    const L = kk.arena.putF32(logits), Ids = kk.arena.alloc(12), W = kk.arena.f32buf(3);
    route(kk, Ids, W.ptr, L.ptr, 1, 6, 3, { mode: 'topk_softmax' });
    expect(Array.from(kk.arena.i32(Ids, 3))).toEqual([1, 2, 4]);
    expect(maxRelErr(W.v, [1 / 3, 1 / 3, 1 / 3])).toBeLessThan(1e-6);
  });

  it('rejects inconsistent group settings', async () => {
    const kk = await kernels(build);
    const L = kk.arena.f32buf(64), Ids = kk.arena.alloc(64), W = kk.arena.f32buf(16);
    expect(() => route(kk, Ids, W.ptr, L.ptr, 1, 64, 8, { mode: 'softmax_topk', nGroup: 8 })).toThrow(/nGroup/);
    expect(() => route(kk, Ids, W.ptr, L.ptr, 1, 64, 20, { mode: 'sigmoid', nGroup: 8, topkGroup: 2 })).toThrow(/topkGroup/);
    expect(() => route(kk, Ids, W.ptr, L.ptr, 1, 8, 9, { mode: 'sigmoid' })).toThrow(/topk/);
  });
});
