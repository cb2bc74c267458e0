import { describe, expect, it } from 'vitest';
import { l2Norm, layerNorm, rmsNorm } from '../src/kernels/norm';
import { l2NormRef, layerNormRef, rmsNormRef } from '../src/kernels/norm.ref';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerance: f32 sums of squares (8 lanes) and one rsqrt against float64: ≤ 1e-5 relative.

describe.each(BUILDS)('normalisations (%s build)', (build) => {
  it.each([[1, 1], [1, 7], [5, 33], [3, 257], [2, 2048], [33, 64]])('rmsNorm T=%i dim=%i: plain, (1+w), no weight, in place', async (T, dim) => {
    const k = await kernels(build);
    const r = rng(T * 31 + dim);
    const x = randn(T * dim, r, 3), w = randn(dim, r, 1);
    const X = k.arena.putF32(x), W = k.arena.putF32(w), Y = k.arena.f32buf(T * dim);
    for (const addOne of [false, true]) {
      poison(Y.v);
      rmsNorm(k, Y.ptr, X.ptr, W.ptr, T, dim, 1e-6, { addOne });
      expect(maxRelErr(Y.v, rmsNormRef(x, w, T, dim, 1e-6, addOne))).toBeLessThan(1e-5);
    }
    poison(Y.v);
    rmsNorm(k, Y.ptr, X.ptr, 0, T, dim, 1e-5);
    expect(maxRelErr(Y.v, rmsNormRef(x, null, T, dim, 1e-5))).toBeLessThan(1e-5);
    rmsNorm(k, X.ptr, X.ptr, W.ptr, T, dim, 1e-6, { addOne: true });
    expect(maxRelErr(X.v, rmsNormRef(x, w, T, dim, 1e-6, true))).toBeLessThan(1e-5);
  });

  it('rmsNorm with a stride normalises each head of [T, H, 2·D] and leaves the gaps alone', async () => {
    const k = await kernels(build);
    const T = 3, H = 5, D = 17, stride = 2 * D;
    const r = rng(77);
    const x = randn(T * H * stride, r, 2), w = randn(D, r);
    const X = k.arena.putF32(x), W = k.arena.putF32(w);
    rmsNorm(k, X.ptr, X.ptr, W.ptr, T * H, D, 1e-6, { stride });
    const want = rmsNormRef(x, w, T * H, D, 1e-6, false, stride);
    const got = new Float32Array(T * H * D);
    for (let row = 0; row < T * H; row++) {
      got.set(X.v.subarray(row * stride, row * stride + D), row * D);
      expect(Array.from(X.v.subarray(row * stride + D, (row + 1) * stride))).toEqual(Array.from(x.subarray(row * stride + D, (row + 1) * stride)));
    }
    expect(maxRelErr(got, want)).toBeLessThan(1e-5);
  });

  it.each([[1, 1], [4, 7], [2, 33], [3, 1024]])('layerNorm T=%i dim=%i with and without affine', async (T, dim) => {
    const k = await kernels(build);
    const r = rng(dim + 5);
    const x = randn(T * dim, r, 4).map((v) => v + 3), w = randn(dim, r), b = randn(dim, r);
    const X = k.arena.putF32(x), W = k.arena.putF32(w), B = k.arena.putF32(b), Y = k.arena.f32buf(T * dim);
    poison(Y.v);
    layerNorm(k, Y.ptr, X.ptr, W.ptr, B.ptr, T, dim, 1e-5);
    // dim 1: x − mean is exactly 0, so every output equals the bias.
    expect(maxRelErr(Y.v, layerNormRef(x, w, b, T, dim, 1e-5))).toBeLessThan(1e-5);
    poison(Y.v);
    layerNorm(k, Y.ptr, X.ptr, 0, 0, T, dim, 1e-5);
    expect(maxRelErr(Y.v, layerNormRef(x, null, null, T, dim, 1e-5))).toBeLessThan(1e-5);
  });

  it.each([[1, 8], [6, 17], [4, 128]])('l2Norm rows=%i dim=%i', async (rows, dim) => {
    const k = await kernels(build);
    const x = randn(rows * dim, rng(dim), 2);
    x.fill(0, 0, dim); // an all-zero row stays 0 thanks to eps
    const X = k.arena.putF32(x), Y = k.arena.f32buf(rows * dim);
    poison(Y.v);
    l2Norm(k, Y.ptr, X.ptr, rows, dim, 1e-6);
    expect(maxRelErr(Y.v, l2NormRef(x, rows, dim, 1e-6))).toBeLessThan(1e-5);
    expect(Array.from(Y.v.subarray(0, dim)).every((v) => v === 0)).toBe(true);
  });

  it('rejects bad arguments', async () => {
    const k = await kernels(build);
    const X = k.arena.f32buf(16);
    expect(() => rmsNorm(k, X.ptr, X.ptr, 0, 2, 8, -1)).toThrow(/eps/);
    expect(() => rmsNorm(k, X.ptr, X.ptr, 0, 2, 8, 1e-6, { stride: 4 })).toThrow(/stride/);
    expect(() => layerNorm(k, X.ptr, X.ptr, 0, 0, 1, 0, 1e-5)).toThrow(/dim/);
  });
});
