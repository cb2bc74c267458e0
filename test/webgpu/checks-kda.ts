// WebGPU checks of the Kimi Delta Attention kernels (src/webgpu/kernels/kda.wgsl) against the float64
// reference of src/kernels/linear_attention.ref.ts (per-channel decay, delta rule), on random data at
// odd sizes, outputs and state poisoned with NaN where the kernel must write them: the rule over T
// tokens in one dispatch and token by token (equal), q and k normalised in the kernel, a packed
// [q | k | v] row layout, value heads sharing key heads; and the forget gates. Prints one JSON line:
// { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { linearAttentionRef } from '../../src/kernels/linear_attention.ref';
import { kdaGates, kdaRule } from '../../src/webgpu/dispatch/kda';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { rnd, randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

/** Rows of d floats scaled to unit length with eps 1e-6 under the root (HF l2norm). */
function l2rows(a: Float32Array, d: number): Float64Array {
  const out = new Float64Array(a.length);
  for (let r = 0; r < a.length / d; r++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += a[r * d + i] ** 2;
    for (let i = 0; i < d; i++) out[r * d + i] = a[r * d + i] / Math.sqrt(s + 1e-6);
  }
  return out;
}

await withGpu(async (gpu) => {
  const { K, mk, put, run } = gpuBench(gpu);
  const ACT = 1 << 18;

  // --- the rule: T tokens in one dispatch, and one dispatch per token, from a carried state ---------
  for (const [T, Hv, Hk, dk, dv] of [[1, 1, 1, 1, 1], [7, 3, 3, 5, 4], [13, 4, 2, 17, 70], [9, 2, 2, 32, 37], [5, 1, 1, 130, 3]]) {
    const C = 2 * Hk * dk + Hv * dv;
    const qkv = randn(T * C);
    const g = Float32Array.from({ length: T * Hv * dk }, () => -Math.exp(1.5 * rnd()) * 0.3);
    const beta = Float32Array.from({ length: T * Hv }, () => 0.5 + 0.5 * rnd());
    const S0 = randn(Hv * dk * dv, 0.5);
    // Reference inputs: q, k per value head (repeated from the key heads), normalised; v contiguous.
    const r = Hv / Hk;
    const q = new Float32Array(T * Hv * dk), k = new Float32Array(T * Hv * dk), v = new Float32Array(T * Hv * dv);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < Hv; h++) {
        const kh = Math.floor(h / r);
        q.set(qkv.subarray(t * C + kh * dk, t * C + (kh + 1) * dk), (t * Hv + h) * dk);
        k.set(qkv.subarray(t * C + Hk * dk + kh * dk, t * C + Hk * dk + (kh + 1) * dk), (t * Hv + h) * dk);
      }
      v.set(qkv.subarray(t * C + 2 * Hk * dk, (t + 1) * C), t * Hv * dv);
    }
    const scale = 1 / Math.sqrt(dk);
    const ref = linearAttentionRef(l2rows(q, dk), l2rows(k, dk), v, S0, { T, H: Hv, dk, dv, decay: 'vector', g, beta, scale });
    const off = { qkv: 0, g: T * C, beta: T * C + T * Hv * dk, o: T * C + T * Hv * dk + T * Hv };
    const no = T * Hv * dv;
    for (const stepwise of [false, true]) {
      const b = mk(ACT, ACT);
      put(b.a, off.qkv, qkv);
      put(b.a, off.g, g);
      put(b.a, off.beta, beta);
      put(b.st, 0, S0);
      const o = { Hv, Hk, dk, dv, scale, qkStride: C, vStride: C };
      const at = (t: number) => kdaRule(K, b, off.o + t * Hv * dv, 0, off.qkv + t * C, off.qkv + t * C + Hk * dk, off.qkv + t * C + 2 * Hk * dk,
        off.g + t * Hv * dk, off.beta + t * Hv, { ...o, T: stepwise ? 1 : T });
      const list = stepwise ? Array.from({ length: T }, (_, t) => at(t)) : [at(0)];
      const y = await run(list, b.a, off.o, no);
      const S = await run([], b.st, 0, Hv * dk * dv);
      const how = stepwise ? 'token by token' : 'one dispatch';
      check(`kda T${T} Hv${Hv} Hk${Hk} dk${dk} dv${dv} (${how}): o vs float64`, rel(y, ref.o), 2e-5);
      check(`kda T${T} Hv${Hv} Hk${Hk} dk${dk} dv${dv} (${how}): state vs float64`, rel(S, ref.S), 2e-5);
    }
  }

  // --- forget gates: −exp(A_log_h)·softplus(f + dt_bias), both softplus branches ----------------------
  for (const [rows, H, dk] of [[1, 1, 1], [5, 3, 7], [2, 4, 33]]) {
    const C = H * dk;
    // Spread over both branches; the first value above the threshold (a lone tiny softplus would be
    // measured against itself: f32 log(1 + exp(z)) is 0 below z ≈ −17).
    const f = Float32Array.from({ length: rows * C }, () => 25 * rnd());
    f[0] = 24;
    const aLog = randn(H, 1), dt = randn(C, 2);
    const c = new Float32Array(H + C + 16);
    c.set(aLog, 0);
    c.set(dt, H + 16);
    const b = mk(ACT, 16, c);
    put(b.a, 0, f);
    const got = await run([kdaGates(K, b, { g: 0, aLog: 0, dtBias: H + 16, rows, C, dk })], b.a, 0, rows * C);
    const want = Array.from(f, (x, i) => {
      const z = x + dt[i % C];
      return -Math.exp(aLog[Math.floor((i % C) / dk)]) * (z > 20 ? z : Math.log1p(Math.exp(z)));
    });
    check(`kda gates rows${rows} H${H} dk${dk}`, rel(got, want), 1e-5);
  }

  checks.print(gpu.adapterName);
});
