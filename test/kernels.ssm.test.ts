import { describe, expect, it } from 'vitest';
import { selectiveScan, ssdScan, ssdScanScratchBytes } from '../src/kernels/ssm';
import { selectiveScanRef, ssdScanRef } from '../src/kernels/ssm.ref';
import type { K } from '../src/kernels/types';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances: 1e-5 relative (max |err| / max |ref|) against the float64 recurrences. Each output is a
// sum of N (Mamba-1) or T·N (accumulated state) f32 products with exp() of ~2 ulp, so the rounding stays
// near 1e-6 of the largest term. The SSD chunked form only regroups the same sums (chunk-local
// exponentials of running sums of dt·A), so it is held to the same 1e-5. Splitting a sequence into
// single-token calls runs the identical operations: those comparisons are exact.

/** Inputs in the ranges the models produce: Δ = softplus(·) ∈ (0, ~0.5], A = −exp(A_log) < 0. */
function mamba1Data(T: number, dI: number, N: number, seed: number) {
  const r = rng(seed);
  return {
    x: randn(T * dI, r, 2), z: randn(T * dI, r, 3),
    delta: Float32Array.from({ length: T * dI }, () => Math.log1p(Math.exp(3 * r() - 4))),
    A: Float32Array.from({ length: dI * N }, () => -Math.exp(3 * r() - 1)),
    B: randn(T * N, r), C: randn(T * N, r), D: randn(dI, r), h: randn(dI * N, r),
  };
}

describe.each(BUILDS)('selectiveScan (%s build)', (build) => {
  it.each([
    [1, 1, 1], [7, 5, 16], [33, 17, 7], [64, 40, 16], [3, 9, 33],
  ])('T=%i dInner=%i N=%i matches HF slow_forward in float64, with and without the gate', async (T, dI, N) => {
    const K = await kernels(build);
    const d = mamba1Data(T, dI, N, T * 31 + dI * 7 + N);
    const a = K.arena;
    const X = a.putF32(d.x), Z = a.putF32(d.z), Dt = a.putF32(d.delta), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
    for (const gated of [true, false]) {
      const h = a.putF32(d.h), Y = a.f32buf(T * dI);
      poison(Y.v);
      selectiveScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, gated ? Z.ptr : 0, { T, dInner: dI, N });
      const ref = selectiveScanRef(d.x, d.delta, d.A, d.B, d.C, d.D, gated ? d.z : null, d.h, T, dI, N);
      expect(maxRelErr(Y.v, ref.y)).toBeLessThan(1e-5);
      expect(maxRelErr(h.v, ref.h)).toBeLessThan(1e-5);
    }
  });

  it('prefill in two pieces then single-token decode is bit-identical to one call', async () => {
    const K = await kernels(build);
    const T = 29, dI = 13, N = 16;
    const d = mamba1Data(T, dI, N, 4);
    const a = K.arena;
    const X = a.putF32(d.x), Z = a.putF32(d.z), Dt = a.putF32(d.delta), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
    const h1 = a.putF32(d.h), Y1 = a.f32buf(T * dI), h2 = a.putF32(d.h), Y2 = a.f32buf(T * dI);
    poison(Y1.v);
    poison(Y2.v);
    selectiveScan(K, Y1.ptr, h1.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, Z.ptr, { T, dInner: dI, N });
    const piece = (t0: number, n: number) => selectiveScan(K, Y2.ptr + t0 * dI * 4, h2.ptr, X.ptr + t0 * dI * 4, Dt.ptr + t0 * dI * 4, A.ptr,
      B.ptr + t0 * N * 4, C.ptr + t0 * N * 4, D.ptr, Z.ptr + t0 * dI * 4, { T: n, dInner: dI, N });
    piece(0, 10);
    piece(10, 12);
    for (let t = 22; t < T; t++) piece(t, 1);
    expect(Array.from(Y2.v)).toEqual(Array.from(Y1.v));
    expect(Array.from(h2.v)).toEqual(Array.from(h1.v));
  });

  it('validates its arguments', async () => {
    const K = await kernels(build);
    const B = K.arena.f32buf(256);
    expect(() => selectiveScan(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 0, { T: 1, dInner: 4, N: 0 })).toThrow(/N must be/);
    expect(() => selectiveScan(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 0, { T: 100, dInner: 64, N: 16 })).not.toThrow();
    expect(() => selectiveScan(K, B.ptr, K.memory.buffer.byteLength - 8, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 0, { T: 1, dInner: 4, N: 4 })).toThrow(/h: .* run past the end/);
  });
});

function ssdData(T: number, H: number, P: number, G: number, N: number, seed: number) {
  const r = rng(seed);
  return {
    x: randn(T * H * P, r, 2),
    // softplus(dt + dt_bias) clamped to HF's default time_step_limit (0, inf); some large steps so that
    // dt·A sums over a chunk reach far below −87 (exp underflow).
    dt: Float32Array.from({ length: T * H }, () => (r() < 0.1 ? 3 * r() : Math.log1p(Math.exp(4 * r() - 5)))),
    A: Float32Array.from({ length: H }, () => -Math.exp(3 * r() - 1)),
    B: randn(T * G * N, r), C: randn(T * G * N, r), D: randn(H, r), h: randn(H * P * N, r),
  };
}

function ssdRun(K: K, d: ReturnType<typeof ssdData>, T: number, H: number, P: number, G: number, N: number, mode: 'recurrent' | 'chunked' | 'auto', chunk: 32 | 64 = 64, withD = true) {
  const a = K.arena;
  const X = a.putF32(d.x), Dt = a.putF32(d.dt), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
  const h = a.putF32(d.h), Y = a.f32buf(T * H * P);
  poison(Y.v);
  ssdScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, withD ? D.ptr : 0, { T, H, P, G, N, mode, chunk });
  return { y: Y, h };
}

describe.each(BUILDS)('ssdScan (%s build)', (build) => {
  it.each([
    [1, 1, 1, 1, 1], [7, 4, 5, 2, 16], [33, 3, 17, 1, 9], [20, 6, 8, 3, 64],
  ])('recurrent T=%i H=%i P=%i G=%i N=%i matches HF decode steps in float64', async (T, H, P, G, N) => {
    const K = await kernels(build);
    const d = ssdData(T, H, P, G, N, T + H * 3 + P * 5 + N);
    for (const withD of [true, false]) {
      const out = ssdRun(K, d, T, H, P, G, N, 'recurrent', 64, withD);
      const ref = ssdScanRef(d.x, d.dt, d.A, d.B, d.C, withD ? d.D : null, d.h, T, H, P, G, N);
      expect(maxRelErr(out.y.v, ref.y)).toBeLessThan(1e-5);
      expect(maxRelErr(out.h.v, ref.h)).toBeLessThan(1e-5);
    }
  });

  for (const chunk of [32, 64] as const) {
    it.each([1, 7, 63, 64, 65, 130, 257])(`chunked (chunk ${chunk}) T=%i equals the recurrence, outputs and final state`, async (T) => {
      const K = await kernels(build);
      const H = 4, P = 9, G = 2, N = 19;
      const d = ssdData(T, H, P, G, N, T * 3 + chunk);
      const out = ssdRun(K, d, T, H, P, G, N, 'chunked', chunk);
      const ref = ssdScanRef(d.x, d.dt, d.A, d.B, d.C, d.D, d.h, T, H, P, G, N);
      expect(maxRelErr(out.y.v, ref.y)).toBeLessThan(1e-5);
      expect(maxRelErr(out.h.v, ref.h)).toBeLessThan(1e-5);
    });
  }

  it('chunked at Mamba-2-130m head sizes (P 64, N 128) equals the recurrence', async () => {
    const K = await kernels(build);
    const T = 100, H = 2, P = 64, G = 1, N = 128;
    const d = ssdData(T, H, P, G, N, 77);
    const out = ssdRun(K, d, T, H, P, G, N, 'chunked', 64);
    const ref = ssdScanRef(d.x, d.dt, d.A, d.B, d.C, d.D, d.h, T, H, P, G, N);
    expect(maxRelErr(out.y.v, ref.y)).toBeLessThan(1e-5);
    expect(maxRelErr(out.h.v, ref.h)).toBeLessThan(1e-5);
  });

  it('chunked prefill in two pieces then decode steps equals one recurrent pass', async () => {
    const K = await kernels(build);
    const T = 90, H = 4, P = 12, G = 2, N = 24;
    const d = ssdData(T, H, P, G, N, 8);
    const one = ssdRun(K, d, T, H, P, G, N, 'recurrent');
    const a = K.arena;
    const X = a.putF32(d.x), Dt = a.putF32(d.dt), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
    const h = a.putF32(d.h), Y = a.f32buf(T * H * P);
    poison(Y.v);
    const piece = (t0: number, n: number, mode: 'chunked' | 'auto') => ssdScan(K, Y.ptr + t0 * H * P * 4, h.ptr, X.ptr + t0 * H * P * 4, Dt.ptr + t0 * H * 4, A.ptr,
      B.ptr + t0 * G * N * 4, C.ptr + t0 * G * N * 4, D.ptr, { T: n, H, P, G, N, mode, chunk: 32 });
    piece(0, 50, 'chunked');
    piece(50, 35, 'chunked');
    for (let t = 85; t < T; t++) piece(t, 1, 'auto');
    expect(maxRelErr(Y.v, one.y.v)).toBeLessThan(1e-5);
    expect(maxRelErr(h.v, one.h.v)).toBeLessThan(1e-5);
  });

  it('recurrent single-token calls are bit-identical to one recurrent call', async () => {
    const K = await kernels(build);
    const T = 17, H = 2, P = 5, G = 1, N = 12;
    const d = ssdData(T, H, P, G, N, 9);
    const one = ssdRun(K, d, T, H, P, G, N, 'recurrent');
    const a = K.arena;
    const X = a.putF32(d.x), Dt = a.putF32(d.dt), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
    const h = a.putF32(d.h), Y = a.f32buf(T * H * P);
    for (let t = 0; t < T; t++) {
      ssdScan(K, Y.ptr + t * H * P * 4, h.ptr, X.ptr + t * H * P * 4, Dt.ptr + t * H * 4, A.ptr, B.ptr + t * G * N * 4, C.ptr + t * G * N * 4, D.ptr, { T: 1, H, P, G, N });
    }
    expect(Array.from(Y.v)).toEqual(Array.from(one.y.v));
    expect(Array.from(h.v)).toEqual(Array.from(one.h.v));
  });

  it('uses no more than ssdScanScratchBytes of an explicit scratch', async () => {
    const K = await kernels(build);
    const T = 70, H = 2, P = 7, G = 1, N = 13;
    const d = ssdData(T, H, P, G, N, 10);
    const bytes = ssdScanScratchBytes(K, { P, N, chunk: 32 });
    const a = K.arena;
    const scr = a.f32buf(bytes / 4 + 64);
    scr.v.fill(777);
    const X = a.putF32(d.x), Dt = a.putF32(d.dt), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
    const h = a.putF32(d.h), Y = a.f32buf(T * H * P);
    ssdScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, { T, H, P, G, N, mode: 'chunked', chunk: 32, scratch: scr.ptr });
    expect(Array.from(scr.v.subarray(bytes / 4))).toEqual(new Array(64).fill(777));
    expect(maxRelErr(Y.v, ssdScanRef(d.x, d.dt, d.A, d.B, d.C, d.D, d.h, T, H, P, G, N).y)).toBeLessThan(1e-5);
  });

  it('without scratch or free memory: auto runs the recurrent form, chunked refuses', async () => {
    const K = await kernels(build);
    const T = 70, H = 2, P = 6, G = 1, N = 10;
    const d = ssdData(T, H, P, G, N, 12);
    const a = K.arena;
    const X = a.putF32(d.x), Dt = a.putF32(d.dt), A = a.putF32(d.A), B = a.putF32(d.B), C = a.putF32(d.C), D = a.putF32(d.D);
    const h = a.putF32(d.h), Y = a.f32buf(T * H * P);
    poison(Y.v);
    a.alloc(K.memory.buffer.byteLength - a.top - 8, 4);
    const run = (mode: 'auto' | 'chunked') => ssdScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, { T, H, P, G, N, mode, chunk: 32 });
    expect(() => run('chunked')).toThrow(/scratch: the chunked form needs/);
    run('auto');
    const ref = ssdScanRef(d.x, d.dt, d.A, d.B, d.C, d.D, d.h, T, H, P, G, N);
    expect(maxRelErr(Y.v, ref.y)).toBeLessThan(1e-5);
    expect(maxRelErr(h.v, ref.h)).toBeLessThan(1e-5);
  });

  it('validates its arguments', async () => {
    const K = await kernels(build);
    const B = K.arena.f32buf(1024);
    expect(() => ssdScan(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 0, { T: 1, H: 3, P: 2, G: 2, N: 2 })).toThrow(/not a multiple/);
    expect(() => ssdScan(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, 0, { T: 1, H: 2, P: 2, G: 1, N: 2, chunk: 20 as 16 })).toThrow(/chunk must be/);
  });
});
