import { describe, expect, it } from 'vitest';
import { mlstm, mlstmOutput, mlstmStateFloats } from '../src/kernels/mlstm';
import { mlstmOutputRef, mlstmRef } from '../src/kernels/mlstm.ref';
import type { K } from '../src/kernels/types';
import { kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances: 1e-5 relative (max |err| / max |ref|) against the float64 parallel form. The kernel
// accumulates in float64 and rounds the state to f32 after each token, as HF stores it; the stabilised
// weights are ≤ 1, so the rounding stays ~1e-7 of the largest term per token. The output head is a
// norm and two products per element: 1e-6. Splitting the tokens into calls of any size runs the same
// operations on the same stored state: exact.

interface Case { T: number; H: number; dk: number; dv: number }

const CASES: Case[] = [
  { T: 1, H: 1, dk: 1, dv: 1 }, { T: 7, H: 3, dk: 5, dv: 4 }, { T: 13, H: 2, dk: 17, dv: 21 },
  { T: 40, H: 3, dk: 16, dv: 37 }, { T: 23, H: 1, dk: 64, dv: 32 }, { T: 5, H: 2, dk: 3, dv: 35 },
];

function data(c: Case, seed: number) {
  const r = rng(seed);
  const { T, H, dk, dv } = c;
  const S = randn(mlstmStateFloats(H, dk, dv), r, 0.5);
  // Stabiliser of the incoming state in [−2, 2].
  for (let h = 0; h < H; h++) S[H * (dk * dv + dk) + h] = (r() * 2 - 1) * 2;
  return {
    q: randn(T * H * dk, r), k: randn(T * H * dk, r), v: randn(T * H * dv, r, 2),
    // Input gates around the forget gates' running sums so that the max takes both branches.
    i: Float32Array.from({ length: T * H }, () => (r() * 2 - 1) * 4),
    f: Float32Array.from({ length: T * H }, () => r() * 6 - 2),
    S,
  };
}

type Data = ReturnType<typeof data>;

function put(K: K, d: Data) {
  const A = K.arena;
  return { q: A.putF32(d.q), k: A.putF32(d.k), v: A.putF32(d.v), i: A.putF32(d.i), f: A.putF32(d.f) };
}

/** Runs tokens t0 … t0+n−1 (pieces of the same buffers). */
function run(K: K, b: ReturnType<typeof put>, y: number, S: number, c: Case, t0: number, n: number) {
  const { H, dk, dv } = c;
  mlstm(K, y + t0 * H * dv * 4, S, b.q.ptr + t0 * H * dk * 4, b.k.ptr + t0 * H * dk * 4, b.v.ptr + t0 * H * dv * 4,
    b.i.ptr + t0 * H * 4, b.f.ptr + t0 * H * 4, { T: n, H, dk, dv, eps: 1e-6 });
}

describe('mlstm', () => {
  it.each(CASES)('T=$T H=$H dk=$dk dv=$dv matches the parallel form in float64', async (c) => {
    const K = await kernels('simd');
    const d = data(c, c.T * 31 + c.dk * 7 + c.dv);
    const b = put(K, d);
    const S = K.arena.putF32(d.S), Y = K.arena.f32buf(c.T * c.H * c.dv);
    poison(Y.v);
    run(K, b, Y.ptr, S.ptr, c, 0, c.T);
    const ref = mlstmRef(d, c.T, c.H, c.dk, c.dv, 1e-6);
    expect(maxRelErr(Y.v, ref.y)).toBeLessThan(1e-5);
    expect(maxRelErr(S.v, ref.S)).toBeLessThan(1e-5);
    expect(Array.from(b.q.v)).toEqual(Array.from(d.q));
    expect(Array.from(b.f.v)).toEqual(Array.from(d.f));
  });

  it.each(CASES.filter((c) => c.T > 1))('T=$T H=$H dk=$dk dv=$dv: one call equals single-token calls and odd pieces, bit for bit', async (c) => {
    const K = await kernels('simd');
    const d = data(c, c.T + 5);
    const b = put(K, d);
    const n = c.T * c.H * c.dv;
    const S1 = K.arena.putF32(d.S), Y1 = K.arena.f32buf(n);
    run(K, b, Y1.ptr, S1.ptr, c, 0, c.T);
    const S2 = K.arena.putF32(d.S), Y2 = K.arena.f32buf(n);
    poison(Y2.v);
    for (let t = 0; t < c.T; t++) run(K, b, Y2.ptr, S2.ptr, c, t, 1);
    expect(Array.from(Y2.v)).toEqual(Array.from(Y1.v));
    expect(Array.from(S2.v)).toEqual(Array.from(S1.v));
    const S3 = K.arena.putF32(d.S), Y3 = K.arena.f32buf(n);
    poison(Y3.v);
    const cut = Math.max(1, Math.floor(c.T / 3));
    run(K, b, Y3.ptr, S3.ptr, c, 0, cut);
    run(K, b, Y3.ptr, S3.ptr, c, cut, c.T - cut);
    expect(Array.from(Y3.v)).toEqual(Array.from(Y1.v));
    expect(Array.from(S3.v)).toEqual(Array.from(S1.v));
  });

  it('a zero state starts as HF does (m = 0): the first token attends to itself only', async () => {
    const K = await kernels('simd');
    const c = { T: 9, H: 2, dk: 6, dv: 5 };
    const d = { ...data(c, 99), S: new Float32Array(mlstmStateFloats(2, 6, 5)) };
    const b = put(K, d);
    const S = K.arena.putF32(d.S), Y = K.arena.f32buf(c.T * c.H * c.dv);
    run(K, b, Y.ptr, S.ptr, c, 0, c.T);
    expect(maxRelErr(Y.v, mlstmRef(d, c.T, c.H, c.dk, c.dv, 1e-6).y)).toBeLessThan(1e-5);
  });

  it('rejects a state or output too short for the sizes', async () => {
    const K = await kernels('simd');
    const x = K.arena.f32buf(8);
    expect(() => mlstm(K, x.ptr, K.arena.size - 8, x.ptr, x.ptr, x.ptr, x.ptr, x.ptr, { T: 1, H: 1, dk: 1, dv: 1, eps: 1e-6 })).toThrow(/S/);
  });
});

describe('mlstmOutput', () => {
  it.each([[1, 1, 1], [6, 3, 7], [3, 2, 32], [5, 4, 13]])('rows=%i H=%i dv=%i matches float64, with and without bias', async (rows, H, dv) => {
    const K = await kernels('simd');
    const r = rng(rows * 100 + H * 10 + dv);
    const n = rows * H * dv;
    const y = randn(n, r, 3), o = randn(n, r, 2), w = randn(H * dv, r), bias = randn(H * dv, r, 0.3);
    for (const withBias of [false, true]) {
      const Y = K.arena.putF32(y), O = K.arena.putF32(o), W = K.arena.putF32(w), B = K.arena.putF32(bias);
      mlstmOutput(K, Y.ptr, O.ptr, W.ptr, withBias ? B.ptr : 0, rows, H, dv, 1e-5);
      expect(maxRelErr(Y.v, mlstmOutputRef(y, o, w, withBias ? bias : null, rows, H, dv, 1e-5))).toBeLessThan(1e-6);
    }
  });
});
