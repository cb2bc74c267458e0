import { describe, expect, it } from 'vitest';
import { conv1d } from '../src/kernels/conv';
import { conv1dRef } from '../src/kernels/conv.ref';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerance: W ≤ 4 products summed in f32 (+ silu) against float64: ≤ 1e-5 relative.

describe.each(BUILDS)('causal depthwise conv1d (%s build)', (build) => {
  for (const W of [2, 3, 4]) {
    for (const act of ['none', 'silu'] as const) {
      it.each([[1, 1], [5, 7], [33, 17], [9, 64]])(`W=${W} ${act} T=%i C=%i: zero state = HF padded conv; state carried`, async (T, C) => {
        const k = await kernels(build);
        const r = rng(T * 97 + C * 3 + W);
        const x = randn(T * C, r, 2), w = randn(C * W, r), b = randn(C, r);
        const X = k.arena.putF32(x), Wb = k.arena.putF32(w), B = k.arena.putF32(b);
        const Y = k.arena.f32buf(T * C), S = k.arena.f32buf(C * (W - 1));
        S.v.fill(0);
        poison(Y.v);
        conv1d(k, Y.ptr, X.ptr, Wb.ptr, B.ptr, S.ptr, T, C, W, act);
        const ref = conv1dRef(x, w, b, null, T, C, W, act);
        expect(maxRelErr(Y.v, ref.y)).toBeLessThan(1e-5);
        expect(maxRelErr(S.v, ref.state)).toBe(0);
        // A second chunk continues from the carried state.
        const x2 = randn(T * C, r, 2);
        const X2 = k.arena.putF32(x2);
        poison(Y.v);
        conv1d(k, Y.ptr, X2.ptr, Wb.ptr, 0, S.ptr, T, C, W, act);
        const ref2 = conv1dRef(x2, w, null, ref.state, T, C, W, act);
        expect(maxRelErr(Y.v, ref2.y)).toBeLessThan(1e-5);
        expect(maxRelErr(S.v, ref2.state)).toBe(0);
      });
    }
  }

  it.each([2, 3, 4])('W=%i: one call over T tokens equals T single decode steps, in place too', async (W) => {
    const k = await kernels(build);
    const T = 37, C = 23;
    const r = rng(W);
    const x = randn(T * C, r, 2), w = randn(C * W, r), b = randn(C, r), s0 = randn(C * (W - 1), r);
    const X = k.arena.putF32(x), Wb = k.arena.putF32(w), B = k.arena.putF32(b);
    const Sa = k.arena.putF32(s0), Sb = k.arena.putF32(s0), Ya = k.arena.f32buf(T * C), Yb = k.arena.f32buf(T * C);
    poison(Ya.v);
    poison(Yb.v);
    conv1d(k, Ya.ptr, X.ptr, Wb.ptr, B.ptr, Sa.ptr, T, C, W, 'silu');
    for (let t = 0; t < T; t++) conv1d(k, Yb.ptr + t * C * 4, X.ptr + t * C * 4, Wb.ptr, B.ptr, Sb.ptr, 1, C, W, 'silu');
    expect(Array.from(Yb.v)).toEqual(Array.from(Ya.v));
    expect(Array.from(Sb.v)).toEqual(Array.from(Sa.v));
    const ref = conv1dRef(x, w, b, s0, T, C, W, 'silu');
    expect(maxRelErr(Ya.v, ref.y)).toBeLessThan(1e-5);
    // In place (y = x) gives the same result.
    const Sc = k.arena.putF32(s0);
    conv1d(k, X.ptr, X.ptr, Wb.ptr, B.ptr, Sc.ptr, T, C, W, 'silu');
    expect(Array.from(X.v)).toEqual(Array.from(Ya.v));
  });

  it('rejects W outside 2..4', async () => {
    const k = await kernels(build);
    const X = k.arena.f32buf(64);
    expect(() => conv1d(k, X.ptr, X.ptr, X.ptr, 0, X.ptr, 1, 4, 5, 'none')).toThrow(/W must be/);
  });
});
