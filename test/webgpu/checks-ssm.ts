// WebGPU checks of the state-space kernels (src/webgpu/kernels/ssm.wgsl.ts): the conv step with bias,
// the Mamba-1 selective-scan step and the Mamba-2 (SSD) step against the float64 references
// (src/kernels/conv.ref.ts, ssm.ref.ts), on random data at odd sizes, over several steps (one
// dispatch per token, and one dispatch over all tokens), outputs and state, outputs poisoned with
// NaN first. Runs under Deno (`deno run --allow-read --allow-env --unstable-sloppy-imports
// test/webgpu/checks-ssm.ts`) and prints one JSON line { adapter, results: [{ name, err, tol, pass }] }
// or { error } when no device was acquired.

import type { Dispatch } from '../../src/webgpu/ops';
import { ssmConv, selectiveScanStep, ssdScanStep } from '../../src/webgpu/dispatch/ssm';
import { conv1dRef } from '../../src/kernels/conv.ref';
import { selectiveScanRef, ssdScanRef } from '../../src/kernels/ssm.ref';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

const softplus = (v: number) => (v > 20 ? v : Math.log1p(Math.exp(v)));
const silu = (v: number) => v / (1 + Math.exp(-v));

await withGpu(async (gpu) => {
  const { K, mk: bufs, put, poison, read } = gpuBench(gpu);
  const ACT = 1 << 18;
  const mk = (cData: Float32Array) => bufs(ACT, ACT, cData, 16);
  /** Lays out constant vectors one after another; returns their offsets. */
  const pack = (...vs: Float32Array[]) => {
    const offs: number[] = [];
    let n = 0;
    for (const v of vs) {
      offs.push(n);
      n += Math.ceil(v.length / 4) * 4;
    }
    const all = new Float32Array(n);
    vs.forEach((v, i) => all.set(v, offs[i]));
    return { all, offs };
  };

  // --- conv step with bias: W 2..4, odd channel counts, per-token and whole-sequence dispatches ----
  for (const [C, W, T, withBias, act] of [[77, 4, 5, true, true], [13, 3, 4, false, true], [41, 2, 3, true, false]] as const) {
    const X = randn(T * C), Wt = randn(C * W, 0.5), Bs = randn(C, 0.3), S0 = randn(C * (W - 1));
    const { all, offs } = pack(Wt, Bs);
    const r = conv1dRef(X, Wt, withBias ? Bs : null, S0, T, C, W, act ? 'silu' : 'none');
    for (const perToken of [true, false]) {
      const b = mk(all);
      // x at [0, T·C), y at 8192 (separate), state at st[16]
      const xo = 0, yo = 8192, so = 16;
      put(b.a, xo, X);
      poison(b.a, yo, T * C);
      put(b.st, so, S0);
      const list: Dispatch[] = perToken
        ? Array.from({ length: T }, (_, t) => ssmConv(K, b, yo + t * C, xo + t * C, offs[0], withBias ? offs[1] : -1, so, 1, C, W, { silu: act }))
        : [ssmConv(K, b, yo, xo, offs[0], withBias ? offs[1] : -1, so, T, C, W, { silu: act })];
      await K.run(list);
      const got = await read(b.a, yo, T * C), gs = await read(b.st, so, C * (W - 1));
      const tag = `ssmConv C${C} W${W} T${T}${withBias ? ' bias' : ''}${act ? ' silu' : ''} ${perToken ? 'per token' : 'one dispatch'}`;
      check(`${tag}: y`, rel(got, r.y), 1e-5);
      check(`${tag}: state`, rel(gs, r.state), 1e-6);
    }
    // in place (y = x), the mixers' use
    const b = mk(all);
    put(b.a, 0, X);
    put(b.st, 0, S0);
    await K.run(Array.from({ length: T }, (_, t) => ssmConv(K, b, t * C, t * C, offs[0], withBias ? offs[1] : -1, 0, 1, C, W, { silu: act })));
    check(`ssmConv C${C} W${W} in place`, rel(await read(b.a, 0, T * C), r.y), 1e-5);
  }

  // --- Mamba-1 selective scan step ---------------------------------------------------------------
  for (const [dI, N, T, gate, raw] of [[37, 13, 5, true, true], [70, 16, 4, false, false], [5, 3, 6, true, false]] as const) {
    const X = randn(T * dI), Z = randn(T * dI, 2), Bm = randn(T * N), Cm = randn(T * N);
    const Araw = randn(dI * N, 0.5, -1.2).map((v) => -Math.exp(v)), Dv = randn(dI), dtB = randn(dI, 1.5, -5.5);
    // raw: dt is the projection, Δ = softplus(dt + dt_bias); otherwise dt is Δ itself
    const DT = raw ? randn(T * dI, 1.5) : randn(T * dI, 0.05, 0.06);
    const delta = raw ? DT.map((v, i) => softplus(Math.fround(v + dtB[i % dI]))) : DT;
    // from a zero state (a sequence's start) the state and output scale with Δ, so its rounding shows
    const H0 = raw ? new Float32Array(dI * N) : randn(dI * N);
    const r = selectiveScanRef(X, delta, Araw, Bm, Cm, Dv, gate ? Z : null, H0, T, dI, N);
    const { all, offs } = pack(Araw, Dv, dtB);
    for (const perToken of [true, false]) {
      const b = mk(all);
      const xo = 0, dto = 4096, zo = 8192, bo = 12288, co = 16384, yo = 20480, ho = 8;
      put(b.a, xo, X);
      put(b.a, dto, DT);
      put(b.a, zo, Z);
      put(b.a, bo, Bm);
      put(b.a, co, Cm);
      poison(b.a, yo, T * dI);
      put(b.st, ho, H0);
      const o = { dI, N, dtBias: raw ? offs[2] : undefined };
      const step = (t: number, n: number) => selectiveScanStep(K, b, yo + t * dI, ho, xo + t * dI, dto + t * dI, offs[0], bo + t * N, co + t * N, offs[1], gate ? zo + t * dI : -1, { ...o, T: n });
      await K.run(perToken ? Array.from({ length: T }, (_, t) => step(t, 1)) : [step(0, T)]);
      const got = await read(b.a, yo, T * dI), gh = await read(b.st, ho, dI * N);
      const tag = `selectiveScan dI${dI} N${N} T${T}${gate ? ' gated' : ''}${raw ? ' softplus(dt+b)' : ''} ${perToken ? 'per token' : 'one dispatch'}`;
      check(`${tag}: y`, rel(got, r.y), 2e-5);
      check(`${tag}: state`, rel(gh, r.h), 2e-5);
    }
  }

  // --- Mamba-2 (SSD) scan step: groups, x/B/C inside one conv row, dt clamp, optional D and gate ----
  for (const [H, P, G, N, T, gate, useD, limit] of [
    [6, 5, 3, 11, 4, true, true, [0.01, 0.5]], [4, 7, 1, 16, 3, false, true, null], [9, 3, 9, 5, 5, true, false, null],
  ] as const) {
    const HP = H * P, GN = G * N, row = HP + 2 * GN + H; // one row per token: [x | B | C | dt]
    const X = randn(T * HP), Bm = randn(T * GN), Cm = randn(T * GN), DTraw = randn(T * H, 2, -1), Z = randn(T * HP, 2);
    const Av = randn(H, 0.5, 0).map((v) => -Math.exp(v)), Dv = randn(H), dtB = randn(H, 1, -1);
    const [lo, hi] = limit ?? [0, Infinity];
    const dt = DTraw.map((v, i) => Math.min(Math.max(softplus(Math.fround(v + dtB[i % H])), lo), hi));
    const H0 = randn(HP * N);
    const r = ssdScanRef(X, dt, Av, Bm, Cm, useD ? Dv : null, H0, T, H, P, G, N);
    const want = gate ? r.y.map((v, i) => v * silu(Z[i])) : r.y;
    const rows = new Float32Array(T * row);
    for (let t = 0; t < T; t++) {
      rows.set(X.subarray(t * HP, (t + 1) * HP), t * row);
      rows.set(Bm.subarray(t * GN, (t + 1) * GN), t * row + HP);
      rows.set(Cm.subarray(t * GN, (t + 1) * GN), t * row + HP + GN);
      rows.set(DTraw.subarray(t * H, (t + 1) * H), t * row + HP + 2 * GN);
    }
    const { all, offs } = pack(Av, Dv, dtB);
    for (const perToken of [true, false]) {
      const b = mk(all);
      const ro = 0, zo = 8192, yo = 12288, ho = 4;
      put(b.a, ro, rows);
      put(b.a, zo, Z);
      poison(b.a, yo, T * HP);
      put(b.st, ho, H0);
      const step = (t: number, n: number) => ssdScanStep(K, b, yo + t * HP, ho, ro + t * row, ro + t * row + HP + 2 * GN, offs[0], ro + t * row + HP, ro + t * row + HP + GN,
        useD ? offs[1] : -1, gate ? zo + t * HP : -1, { T: n, H, P, G, N, xStride: row, bcStride: row, dtStride: row, dtBias: offs[2], limit: limit ? [lo, hi] : undefined });
      await K.run(perToken ? Array.from({ length: T }, (_, t) => step(t, 1)) : [step(0, T)]);
      const got = await read(b.a, yo, T * HP), gh = await read(b.st, ho, HP * N);
      const tag = `ssdScan H${H} P${P} G${G} N${N} T${T}${gate ? ' gated' : ''}${useD ? ' D' : ''}${limit ? ' clamped' : ''} ${perToken ? 'per token' : 'one dispatch'}`;
      check(`${tag}: y`, rel(got, want), 2e-5);
      check(`${tag}: state`, rel(gh, r.h), 2e-5);
    }
  }

  checks.print(gpu.adapterName, { api: gpu.api });
});
