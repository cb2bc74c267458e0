// WebGPU checks of the mLSTM kernels (src/webgpu/kernels/mlstm.wgsl) against the float64 references of
// src/kernels/mlstm.ref.ts, on random data at odd sizes, outputs poisoned with NaN: the recurrence
// over T tokens in one dispatch and token by token (equal), from a carried state whose stabiliser
// both branches of the max take; the gated per-head LayerNorm with and without bias. Prints one JSON
// line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { mlstmStateFloats } from '../../src/kernels/mlstm';
import { mlstmOutputRef, mlstmRef } from '../../src/kernels/mlstm.ref';
import { mlstmOutput, mlstmRule } from '../../src/webgpu/dispatch/mlstm';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { rnd, randn } = rng(9090);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk, put, run } = gpuBench(gpu);
  const ACT = 1 << 18;

  // --- the recurrence: T tokens in one dispatch, and one dispatch per token ---------------------------
  for (const [T, H, dk, dv] of [[1, 1, 1, 1], [7, 3, 5, 4], [13, 2, 17, 70], [9, 3, 32, 37], [4, 1, 130, 3]]) {
    const nk = T * H * dk, nv = T * H * dv, ns = mlstmStateFloats(H, dk, dv);
    const S0 = randn(ns, 0.5);
    for (let h = 0; h < H; h++) S0[H * (dk * dv + dk) + h] = 2 * rnd();
    const d = {
      q: randn(nk), k: randn(nk), v: randn(nv, 2), S: S0,
      i: Float32Array.from({ length: T * H }, () => 4 * rnd()),
      f: Float32Array.from({ length: T * H }, () => 1 + 3 * rnd()),
    };
    const off = { q: 0, k: nk, v: 2 * nk, i: 2 * nk + nv, f: 2 * nk + nv + T * H, y: 2 * nk + nv + 2 * T * H };
    const ref = mlstmRef(d, T, H, dk, dv, 1e-6);
    for (const stepwise of [false, true]) {
      const b = mk(ACT, ACT);
      for (const key of ['q', 'k', 'v', 'i', 'f'] as const) put(b.a, off[key], d[key]);
      put(b.st, 0, d.S);
      const at = (t: number, n: number) => mlstmRule(K, b, {
        y: off.y + t * H * dv, S: 0, q: off.q + t * H * dk, k: off.k + t * H * dk, v: off.v + t * H * dv, i: off.i + t * H, f: off.f + t * H, T: n, H, dk, dv, eps: 1e-6,
      });
      const list = stepwise ? Array.from({ length: T }, (_, t) => at(t, 1)) : [at(0, T)];
      const y = await run(list, b.a, off.y, nv);
      const S = await run([], b.st, 0, ns);
      const how = stepwise ? 'token by token' : 'one dispatch';
      check(`mlstm T${T} H${H} dk${dk} dv${dv} (${how}): y vs float64`, rel(y, ref.y), 2e-5);
      check(`mlstm T${T} H${H} dk${dk} dv${dv} (${how}): state vs float64`, rel(S, ref.S), 2e-5);
    }
  }

  // --- output head: LayerNorm per head, full-width weight and bias, sigmoid gate ----------------------
  for (const [rows, H, dv] of [[1, 1, 1], [6, 3, 7], [3, 2, 32]]) {
    const n = rows * H * dv;
    const y = randn(n, 3), o = randn(n, 2), w = randn(H * dv), bias = randn(H * dv, 0.3);
    const c = new Float32Array(2 * H * dv + 16);
    c.set(w, 0);
    c.set(bias, H * dv + 16);
    for (const withBias of [false, true]) {
      const b = mk(ACT, 16, c);
      put(b.a, 0, y);
      put(b.a, n, o);
      const got = await run([mlstmOutput(K, b, { y: 0, o: n, w: 0, b: withBias ? H * dv + 16 : -1, rows, H, dv, eps: 1e-5 })], b.a, 0, n);
      check(`mlstm output rows${rows} H${H} dv${dv}${withBias ? ' bias' : ''}`, rel(got, mlstmOutputRef(y, o, w, withBias ? bias : null, rows, H, dv, 1e-5)), 1e-5);
    }
  }

  checks.print(gpu.adapterName);
});
