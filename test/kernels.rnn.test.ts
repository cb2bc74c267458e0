import { describe, expect, it } from 'vitest';
import { rglruScan, wkv4, wkv4InitState } from '../src/kernels/rnn';
import { rglruRef, wkv4Ref } from '../src/kernels/rnn.ref';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances: 1e-5 relative (max |err| / max |ref|) against float64. RG-LRU: two exps (~2 ulp), a
// sqrt and two products per step; the state is a decayed sum of O(T) such terms. WKV: each step is
// a ratio of two such decayed sums computed with ~2-ulp exps. Splitting a sequence into single-token
// calls runs identical operations: exact.

function rglruData(T: number, W: number, seed: number) {
  const r = rng(seed);
  // log_a = −8·r·softplus(Λ), r = sigmoid(·) ∈ (0, 1), softplus(Λ) from HF's init range (a ∈ [0.9, 0.999]^(1/8)…).
  const logA = Float32Array.from({ length: T * W }, () => -8 * r() * Math.log1p(Math.exp(4 * r() - 6)));
  return { logA, x: randn(T * W, r, 2), h: randn(W, r) };
}

describe.each(BUILDS)('rglruScan (%s build)', (build) => {
  it.each([[1, 1], [7, 5], [33, 64], [64, 37]])('T=%i W=%i matches HF RecurrentGemmaRglru in float64, with resets', async (T, W) => {
    const K = await kernels(build);
    const d = rglruData(T, W, T * 13 + W);
    const a = K.arena;
    const L = a.putF32(d.logA), X = a.putF32(d.x);
    // Position 0 at t = 0 (prefill of a new sequence) and again at t = 5 (a packed second document).
    const mask = new Uint8Array(T);
    mask[0] = 1;
    if (T > 5) mask[5] = 1;
    const M = a.put(mask, 4);
    for (const withMask of [true, false]) {
      const h = a.putF32(d.h), Y = a.f32buf(T * W);
      poison(Y.v);
      rglruScan(K, Y.ptr, h.ptr, L.ptr, X.ptr, withMask ? M : 0, T, W);
      const ref = rglruRef(d.logA, d.x, withMask ? mask : null, d.h, T, W);
      expect(maxRelErr(Y.v, ref.y)).toBeLessThan(1e-5);
      expect(maxRelErr(h.v, ref.h)).toBeLessThan(1e-5);
    }
  });

  it('a reset token ignores the incoming state: h = x there', async () => {
    const K = await kernels(build);
    const W = 6;
    const d = rglruData(1, W, 3);
    const a = K.arena;
    const h = a.putF32(Float32Array.from({ length: W }, () => 1e6)), Y = a.f32buf(W);
    rglruScan(K, Y.ptr, h.ptr, a.putF32(d.logA).ptr, a.putF32(d.x).ptr, a.put(new Uint8Array([1]), 4), 1, W);
    expect(Array.from(Y.v)).toEqual(Array.from(d.x));
  });

  it('one call is bit-identical to single-token calls', async () => {
    const K = await kernels(build);
    const T = 21, W = 11;
    const d = rglruData(T, W, 5);
    const a = K.arena;
    const L = a.putF32(d.logA), X = a.putF32(d.x);
    const h1 = a.putF32(d.h), Y1 = a.f32buf(T * W), h2 = a.putF32(d.h), Y2 = a.f32buf(T * W);
    rglruScan(K, Y1.ptr, h1.ptr, L.ptr, X.ptr, 0, T, W);
    for (let t = 0; t < T; t++) rglruScan(K, Y2.ptr + t * W * 4, h2.ptr, L.ptr + t * W * 4, X.ptr + t * W * 4, 0, 1, W);
    expect(Array.from(Y2.v)).toEqual(Array.from(Y1.v));
    expect(Array.from(h2.v)).toEqual(Array.from(h1.v));
  });

  it('validates its arguments', async () => {
    const K = await kernels(build);
    const B = K.arena.f32buf(64);
    expect(() => rglruScan(K, B.ptr, B.ptr, B.ptr, B.ptr, -4, 1, 4)).toThrow(/resetMask/);
    expect(() => rglruScan(K, B.ptr, B.ptr, B.ptr, B.ptr, 0, 1, 0)).toThrow(/W must be/);
  });
});

function wkvData(T: number, C: number, seed: number) {
  const r = rng(seed);
  return {
    // HF init ranges: time_decay ∈ [−5, 3], time_first ≈ log(0.3) ± 0.5; keys up to ±8 so the max
    // tracking matters.
    key: randn(T * C, r, 8), value: randn(T * C, r, 2),
    timeDecay: Float32Array.from({ length: C }, () => -5 + 8 * r()),
    timeFirst: Float32Array.from({ length: C }, () => Math.log(0.3) + r() - 0.5),
  };
}

describe.each(BUILDS)('wkv4 (%s build)', (build) => {
  it.each([[1, 1], [7, 5], [33, 64], [100, 23]])('T=%i C=%i from HF\'s initial state matches rwkv_linear_attention_cpu in float64', async (T, C) => {
    const K = await kernels(build);
    const d = wkvData(T, C, T * 7 + C);
    const a = K.arena;
    const S = a.f32buf(3 * C), O = a.f32buf(T * C);
    wkv4InitState(K, S.ptr, C);
    const s0 = Float32Array.from(S.v);
    expect(Array.from(s0.subarray(2 * C))).toEqual(new Array(C).fill(Math.fround(-1e38)));
    poison(O.v);
    wkv4(K, O.ptr, S.ptr, a.putF32(d.key).ptr, a.putF32(d.value).ptr, a.putF32(d.timeDecay).ptr, a.putF32(d.timeFirst).ptr, T, C);
    const ref = wkv4Ref(d.key, d.value, d.timeDecay, d.timeFirst, s0, T, C);
    expect(maxRelErr(O.v, ref.out)).toBeLessThan(1e-5);
    for (let p = 0; p < 3; p++) expect(maxRelErr(S.v.subarray(p * C, (p + 1) * C), ref.state.subarray(p * C, (p + 1) * C))).toBeLessThan(1e-5);
  });

  it('continues from a carried state; one call is bit-identical to single steps', async () => {
    const K = await kernels(build);
    const T = 40, C = 13;
    const d = wkvData(T, C, 2);
    const a = K.arena;
    const Kk = a.putF32(d.key), V = a.putF32(d.value), Td = a.putF32(d.timeDecay), Tf = a.putF32(d.timeFirst);
    const S1 = a.f32buf(3 * C), S2 = a.f32buf(3 * C), O1 = a.f32buf(T * C), O2 = a.f32buf(T * C);
    wkv4InitState(K, S1.ptr, C);
    wkv4InitState(K, S2.ptr, C);
    wkv4(K, O1.ptr, S1.ptr, Kk.ptr, V.ptr, Td.ptr, Tf.ptr, T, C);
    wkv4(K, O2.ptr, S2.ptr, Kk.ptr, V.ptr, Td.ptr, Tf.ptr, 25, C);
    const mid = Float32Array.from(S2.v);
    for (let t = 25; t < T; t++) wkv4(K, O2.ptr + t * C * 4, S2.ptr, Kk.ptr + t * C * 4, V.ptr + t * C * 4, Td.ptr, Tf.ptr, 1, C);
    expect(Array.from(O2.v)).toEqual(Array.from(O1.v));
    expect(Array.from(S2.v)).toEqual(Array.from(S1.v));
    const ref = wkv4Ref(d.key.subarray(25 * C), d.value.subarray(25 * C), d.timeDecay, d.timeFirst, mid, T - 25, C);
    expect(maxRelErr(O1.v.subarray(25 * C), ref.out)).toBeLessThan(1e-5);
  });
});
