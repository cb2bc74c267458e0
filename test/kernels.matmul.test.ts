import { describe, expect, it } from 'vitest';
import { matmul } from '../src/kernels/matmul';
import { matmulRef } from '../src/kernels/reference';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

describe.each(BUILDS)('matmul f32 (%s build)', (build) => {
  it.each([
    [1, 1, 1], [1, 7, 7], [3, 33, 17], [1, 257, 33], [5, 64, 257], [64, 19, 96],
  ])('batch %i rows %i cols %i matches the reference within 1e-5', async (batch, rows, cols) => {
    const k = await kernels(build);
    const r = rng(1000 + batch * 7 + rows * 13 + cols);
    const w = randn(rows * cols, r), x = randn(batch * cols, r);
    const W = k.arena.putF32(w), X = k.arena.putF32(x), Y = k.arena.f32buf(batch * rows);
    poison(Y.v);
    matmul(k, Y.ptr, X.ptr, { ptr: W.ptr, dtype: 'f32', rows, cols }, batch);
    expect(maxRelErr(Y.v, matmulRef(x, w, batch, rows, cols))).toBeLessThan(1e-5);
  });
});

describe('runtime', () => {
  it('selects the relaxed build on this engine and the baseline when forced', async () => {
    const a = await kernels('relaxed');
    expect(a.build).toBe('relaxed');
    expect(a.exports.buildFeatures() & 1).toBe(1);
    const b = await kernels('simd');
    expect(b.exports.buildFeatures() & 1).toBe(0);
  });
});
