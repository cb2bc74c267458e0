// WebGPU checks of the dynamic mask attention kernel (src/webgpu/kernels/dma.wgsl.ts) against the
// float64 reference of src/kernels/dma.ref.ts, on random data at odd sizes with the output poisoned
// with NaN (biases up to e^2.5, so that f32 exp and log keep the scores within the tolerance): causal and windowed, with and without the top-k cut (equal biases included: repeated dt
// values), all rows in one dispatch and one dispatch per position (equal); and the row product
// (mulConst) that Doge's residual weights use. Prints one JSON line: { adapter, results } or { error }.

import { dmaAttentionRef } from '../../src/kernels/dma.ref';
import { DMA_PARAMS, dmaWgsl } from '../../src/webgpu/kernels/dma.wgsl';
import { EW } from '../../src/webgpu/ops';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk, put, run, setStep } = gpuBench(gpu);
  const ACT = 1 << 18;

  for (const [T, qPos0, Hq, Hkv, D, Dv, window, keep] of [
    [1, 0, 1, 1, 8, 8, 0, 0], [7, 0, 4, 2, 17, 17, 0, 5], [13, 9, 6, 3, 9, 11, 0, 7], [1, 40, 4, 1, 16, 16, 0, 13],
    [11, 5, 3, 3, 5, 7, 6, 0], [19, 3, 8, 2, 33, 33, 9, 4], [5, 70, 2, 1, 64, 64, 0, 64],
  ]) {
    const L = qPos0 + T, maxN = L + 3;
    const q = randn(T * Hq * D, 1.5), Kc = randn(L * Hkv * D, 1.5), Vc = randn(L * Hkv * Dv), dt = randn(L * Hkv, 25), A = randn(Hkv, 0.1);
    for (let j = 3; j < L; j += 5) dt[j * Hkv] = dt[(j - 3) * Hkv];
    const o = { T, qPos0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: Dv, scale: 1 / Math.sqrt(D), window, keep };
    const want = dmaAttentionRef(q, Kc, Vc, dt, A, o);
    const st = { k: 0, v: L * Hkv * D, dt: L * Hkv * (D + Dv) };
    const act = { q: 0, y: T * Hq * D, s: T * Hq * (D + Dv) };
    for (const stepwise of [false, true]) {
      const c = new Float32Array(Hkv + 16);
      c.set(A, 0);
      const b = mk(ACT, L * Hkv * (D + Dv + 1) + 16, c);
      put(b.st, st.k, Kc);
      put(b.st, st.v, Vc);
      put(b.st, st.dt, dt);
      put(b.a, act.q, q);
      const dispatch = (row0: number, rows: number) => K.dispatch('dma_attention', dmaWgsl, DMA_PARAMS, {
        nHeads: Hq, nKv: Hkv, headDim: D, vDim: Dv, qOff: act.q + row0 * Hq * D, oOff: act.y + row0 * Hq * Dv,
        kOff: st.k, vOff: st.v, dtOff: st.dt, aOff: 0, sOff: act.s, maxN, scale: o.scale, window, keep,
        row0, qRowStride: Hq * D, oRowStride: Hq * Dv,
      }, b, [Hq, rows, 1]);
      setStep(b, qPos0);
      let got: Float32Array;
      if (!stepwise) {
        got = await run([dispatch(0, T)], b.a, act.y, T * Hq * Dv);
      } else {
        for (let t = 0; t < T; t++) await run([dispatch(t, 1)], b.a, act.y, 1);
        got = await run([], b.a, act.y, T * Hq * Dv);
      }
      check(`dma T${T} pos${qPos0} Hq${Hq} Hkv${Hkv} D${D} Dv${Dv} window${window} keep${keep} (${stepwise ? 'row by row' : 'one dispatch'})`, rel(got, want), 1e-5);
    }
  }

  {
    const rows = 5, width = 37;
    const x = randn(rows * width), w = randn(width, 2);
    const b = mk(ACT, 16, w);
    put(b.a, 0, x);
    const got = await run([K.elementwise(b, EW.mulConst, rows * width, 0, 0, rows * width, { period: width })], b.a, rows * width, rows * width);
    check('row product x ⊙ w (mulConst, period = width)', rel(got, Array.from(x, (v, i) => Math.fround(v * w[i % width]))), 0);
  }

  checks.print(gpu.adapterName);
});
