import { describe, expect, it } from 'vitest';
import { rwkv7Keys, rwkv7Output, wkv7, wkv7ScratchBytes } from '../src/kernels/rwkv7';
import { rwkv7KeysRef, rwkv7OutputRef, wkv7Ref } from '../src/kernels/rwkv7.ref';
import type { K } from '../src/kernels/types';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances: 1e-5 relative (max |err| / max |ref|) against float64. Each WKV output is a sum of dk
// products with a state that is itself a decayed sum of O(T) rank-2 updates (decay ≤ 1, κ̂ unit,
// a ∈ (0, 1) keep the transition a contraction), so f32 rounding stays ~1e-6 of the largest term.
// The keys and output heads are a norm and a few products per element: 1e-6. Splitting the tokens
// into calls of any size, or a smaller scratch (smaller token groups), runs identical operations
// per element: exact.

interface Case { T: number; H: number; dk: number; dv: number }

function wkvData(c: Case, seed: number) {
  const r = rng(seed);
  const { T, H, dk, dv } = c;
  const nk = T * H * dk;
  const kappa = randn(nk, r);
  for (let row = 0; row < T * H; row++) {
    let s = 0;
    for (let i = 0; i < dk; i++) s += kappa[row * dk + i] ** 2;
    for (let i = 0; i < dk; i++) kappa[row * dk + i] /= Math.sqrt(s);
  }
  return {
    r: randn(nk, r), k: randn(nk, r), v: randn(T * H * dv, r, 2), kappa,
    // RWKV-7's log-decay −e^{−1/2}·σ(z), and a = σ(·).
    w: Float32Array.from({ length: nk }, () => -Math.exp(-0.5) / (1 + Math.exp(-6 * (r() - 0.5)))),
    a: Float32Array.from({ length: nk }, () => r()),
    S: randn(H * dk * dv, r, 0.5),
  };
}

type Data = ReturnType<typeof wkvData>;

function put(K: K, d: Data) {
  const A = K.arena;
  return { r: A.putF32(d.r), w: A.putF32(d.w), k: A.putF32(d.k), v: A.putF32(d.v), kappa: A.putF32(d.kappa), a: A.putF32(d.a) };
}

/** Runs tokens t0 … t0+n−1 through wkv7 (pieces of the same buffers). */
function run(K: K, b: ReturnType<typeof put>, y: number, S: number, c: Case, t0: number, n: number, scratch?: number) {
  const ok = (p: number) => p + t0 * c.H * c.dk * 4;
  wkv7(K, y + t0 * c.H * c.dv * 4, S, ok(b.r.ptr), ok(b.w.ptr), ok(b.k.ptr), b.v.ptr + t0 * c.H * c.dv * 4, ok(b.kappa.ptr), ok(b.a.ptr),
    { T: n, H: c.H, dk: c.dk, dv: c.dv, scratch });
}

const CASES: Case[] = [
  { T: 1, H: 1, dk: 1, dv: 1 }, { T: 7, H: 3, dk: 5, dv: 4 }, { T: 13, H: 2, dk: 17, dv: 21 },
  { T: 40, H: 3, dk: 32, dv: 37 }, { T: 19, H: 1, dk: 64, dv: 64 }, { T: 5, H: 2, dk: 3, dv: 35 }, { T: 33, H: 4, dk: 16, dv: 32 },
];

describe.each(BUILDS)('wkv7 (%s build)', (build) => {
  it.each(CASES)('T=$T H=$H dk=$dk dv=$dv matches the official recurrence in float64', async (c) => {
    const K = await kernels(build);
    const d = wkvData(c, c.T * 31 + c.dk * 7 + c.dv);
    const b = put(K, d);
    const S = K.arena.putF32(d.S), Y = K.arena.f32buf(c.T * c.H * c.dv);
    poison(Y.v);
    run(K, b, Y.ptr, S.ptr, c, 0, c.T);
    const ref = wkv7Ref(d, c.T, c.H, c.dk, c.dv);
    expect(maxRelErr(Y.v, ref.y)).toBeLessThan(1e-5);
    expect(maxRelErr(S.v, ref.S)).toBeLessThan(1e-5);
    // Inputs are read only.
    expect(Array.from(b.kappa.v)).toEqual(Array.from(d.kappa));
    expect(Array.from(b.w.v)).toEqual(Array.from(d.w));
  });

  it.each(CASES.filter((c) => c.T > 1))('T=$T H=$H dk=$dk dv=$dv: one call equals single-token calls, odd pieces and a small scratch, bit for bit', async (c) => {
    const K = await kernels(build);
    const d = wkvData(c, c.T + 5);
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
    const cut = Math.min(5, c.T - 1);
    run(K, b, Y3.ptr, S3.ptr, c, 0, cut);
    run(K, b, Y3.ptr, S3.ptr, c, cut, c.T - cut);
    expect(Array.from(Y3.v)).toEqual(Array.from(Y1.v));
    expect(Array.from(S3.v)).toEqual(Array.from(S1.v));
    // The minimum scratch: one token per group.
    const small = K.arena.alloc(2 * Math.ceil(c.dk / 4) * 4 * 4, 64);
    const S4 = K.arena.putF32(d.S), Y4 = K.arena.f32buf(n);
    poison(Y4.v);
    K.exports.wkv7F32(Y4.ptr, S4.ptr, b.r.ptr, b.w.ptr, b.k.ptr, b.v.ptr, b.kappa.ptr, b.a.ptr, c.T, c.H, c.dk, c.dv, small, 2 * Math.ceil(c.dk / 4) * 4);
    expect(Array.from(Y4.v)).toEqual(Array.from(Y1.v));
    expect(Array.from(S4.v)).toEqual(Array.from(S1.v));
  });

  it('a caller scratch of wkv7ScratchBytes gives the same result as none', async () => {
    const K = await kernels(build);
    const c = { T: 21, H: 2, dk: 24, dv: 20 };
    const d = wkvData(c, 77);
    const b = put(K, d);
    const scr = K.arena.alloc(wkv7ScratchBytes(K, c.dk), 64);
    const S1 = K.arena.putF32(d.S), Y1 = K.arena.f32buf(c.T * c.H * c.dv);
    const S2 = K.arena.putF32(d.S), Y2 = K.arena.f32buf(c.T * c.H * c.dv);
    run(K, b, Y1.ptr, S1.ptr, c, 0, c.T, scr);
    run(K, b, Y2.ptr, S2.ptr, c, 0, c.T);
    expect(Array.from(Y1.v)).toEqual(Array.from(Y2.v));
    expect(Array.from(S1.v)).toEqual(Array.from(S2.v));
  });

  it('validates its arguments', async () => {
    const K = await kernels(build);
    const B = K.arena.f32buf(64);
    const o = { T: 1, H: 1, dk: 4, dv: 4 };
    expect(() => wkv7(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, { ...o, dk: 0 })).toThrow(/dk must be/);
    expect(() => wkv7(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, -4, o)).toThrow(/a: bad pointer/);
    expect(() => wkv7(K, B.ptr, K.arena.size - 16, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, o)).toThrow(/S: .* past the end/);
  });
});

describe.each(BUILDS)('rwkv7Keys and rwkv7Output (%s build)', (build) => {
  it.each([[1, 1, 1], [5, 3, 7], [9, 2, 32], [4, 4, 13]])('keys: rows=%i H=%i dk=%i, both norm guards', async (rows, H, dk) => {
    const K = await kernels(build);
    const r = rng(rows * 100 + dk);
    const C = H * dk;
    const k = randn(rows * C, r, 2), a = Float32Array.from({ length: rows * C }, () => r());
    const kK = Float32Array.from({ length: C }, () => 0.5 + r()), kA = Float32Array.from({ length: C }, () => 0.4 + 1.2 * r());
    // A row whose κ is tiny (‖κ‖² ≈ 1e-8): the two guards then differ visibly.
    if (rows > 1) for (let i = 0; i < dk; i++) k[C + i] = 1e-4 / Math.sqrt(dk) / kK[i];
    for (const norm of [{ mode: 'add', eps: 1e-6 }, { mode: 'clamp', eps: 1e-12 }] as const) {
      const A = K.arena;
      const kb = A.putF32(k), ab = A.putF32(a), kap = A.f32buf(rows * C);
      poison(kap.v);
      rwkv7Keys(K, kap.ptr, kb.ptr, ab.ptr, A.putF32(kK).ptr, A.putF32(kA).ptr, rows, H, dk, norm);
      const ref = rwkv7KeysRef(k, a, kK, kA, rows, H, dk, norm);
      expect(maxRelErr(kap.v, ref.kappa)).toBeLessThan(1e-6);
      expect(maxRelErr(kb.v, ref.k)).toBeLessThan(1e-6);
      for (let row = 0; row < rows; row++) {
        for (let h = 0; h < H; h++) {
          const seg = ref.kappa.subarray(row * C + h * dk, row * C + (h + 1) * dk), got = kap.v.subarray(row * C + h * dk, row * C + (h + 1) * dk);
          expect(maxRelErr(got, seg)).toBeLessThan(1e-6);
        }
      }
    }
  });

  it.each([[1, 1, 1, 1], [6, 3, 5, 7], [3, 2, 16, 32], [7, 4, 9, 18]])('output: rows=%i H=%i dk=%i dv=%i', async (rows, H, dk, dv) => {
    const K = await kernels(build);
    const r = rng(rows * 17 + dv);
    const A = K.arena;
    const y = randn(rows * H * dv, r, 3), rr = randn(rows * H * dk, r), kk = randn(rows * H * dk, r), v = randn(rows * H * dv, r);
    const g = randn(rows * H * dv, r), rK = randn(H * dk, r, 0.5), gw = randn(H * dv, r), gb = randn(H * dv, r, 0.2);
    const Y = A.putF32(y);
    const eps = dk * 1e-5;
    rwkv7Output(K, Y.ptr, A.putF32(rr).ptr, A.putF32(kk).ptr, A.putF32(v).ptr, A.putF32(g).ptr, A.putF32(rK).ptr, A.putF32(gw).ptr, A.putF32(gb).ptr, rows, H, dk, dv, eps);
    expect(maxRelErr(Y.v, rwkv7OutputRef(y, rr, kk, v, g, rK, gw, gb, rows, H, dk, dv, eps))).toBeLessThan(1e-6);
  });

  it('validates its arguments', async () => {
    const K = await kernels(build);
    const B = K.arena.f32buf(64);
    expect(() => rwkv7Keys(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 1, 1, 4, { mode: 'add', eps: 1e-6 })).toThrow(/aliases/);
    expect(() => rwkv7Keys(K, B.ptr + 64, B.ptr, B.ptr, B.ptr, B.ptr, 1, 1, 4, { mode: 'add', eps: 0 })).toThrow(/eps/);
    expect(() => rwkv7Output(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 1, 1, 4, 0, 1e-5)).toThrow(/dv must be/);
  });
});
