// WebGPU checks of the RWKV-7 kernels (src/webgpu/kernels/rwkv7.wgsl) against the float64
// references of src/kernels/rwkv7.ref.ts, on random data at odd sizes, outputs poisoned with NaN: the
// WKV recurrence over T tokens in one dispatch and token by token (equal), the key preparation with
// both norm guards, the output head; and the elementwise softcap at cap 1, the layer's tanh, far
// into saturation. Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { rwkv7KeysRef, rwkv7OutputRef, wkv7Ref } from '../../src/kernels/rwkv7.ref';
import { rwkv7Keys, rwkv7Output, wkv7 } from '../../src/webgpu/dispatch/rwkv7';
import { EW } from '../../src/webgpu/ops';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { rnd, randn } = rng(7707);
const checks = new Checks();
const { check } = checks;

/** Unit rows of d floats. */
function unitRows(a: Float32Array, d: number): Float32Array {
  for (let r = 0; r < a.length / d; r++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += a[r * d + i] ** 2;
    for (let i = 0; i < d; i++) a[r * d + i] /= Math.sqrt(s);
  }
  return a;
}

await withGpu(async (gpu) => {
  const { K, mk, put, run } = gpuBench(gpu);
  const ACT = 1 << 18;

  // --- WKV-7: T tokens in one dispatch, and one dispatch per token, from a carried state ----------
  for (const [T, H, dk, dv] of [[1, 1, 1, 1], [7, 3, 5, 4], [13, 2, 17, 70], [9, 3, 32, 37]]) {
    const nk = T * H * dk, nv = T * H * dv;
    const d = {
      r: randn(nk), k: randn(nk), v: randn(nv, 2), kappa: unitRows(randn(nk), dk),
      w: Float32Array.from({ length: nk }, () => -Math.exp(-0.5) / (1 + Math.exp(-3 * rnd()))),
      a: Float32Array.from({ length: nk }, () => 0.5 + 0.5 * rnd()),
      S: randn(H * dk * dv, 0.5),
    };
    const off = { r: 0, w: nk, k: 2 * nk, kappa: 3 * nk, a: 4 * nk, v: 5 * nk, y: 5 * nk + nv };
    const ref = wkv7Ref(d, T, H, dk, dv);
    for (const stepwise of [false, true]) {
      const b = mk(ACT, ACT);
      for (const key of ['r', 'w', 'k', 'kappa', 'a', 'v'] as const) put(b.a, off[key], d[key]);
      put(b.st, 0, d.S);
      const list = stepwise
        ? Array.from({ length: T }, (_, t) => wkv7(K, b, {
          y: off.y + t * H * dv, S: 0, r: off.r + t * H * dk, w: off.w + t * H * dk, k: off.k + t * H * dk, v: off.v + t * H * dv,
          kappa: off.kappa + t * H * dk, a: off.a + t * H * dk, T: 1, H, dk, dv,
        }))
        : [wkv7(K, b, { y: off.y, S: 0, r: off.r, w: off.w, k: off.k, v: off.v, kappa: off.kappa, a: off.a, T, H, dk, dv })];
      const y = await run(list, b.a, off.y, nv);
      const S = await run([], b.st, 0, H * dk * dv);
      const how = stepwise ? 'token by token' : 'one dispatch';
      check(`wkv7 T${T} H${H} dk${dk} dv${dv} (${how}): y vs float64`, rel(y, ref.y), 1e-5);
      check(`wkv7 T${T} H${H} dk${dk} dv${dv} (${how}): state vs float64`, rel(S, ref.S), 1e-5);
    }
  }

  // --- keys: κ̂ with both guards (a row of tiny κ where they differ), the a-scaled key ---------------
  for (const [rows, H, dk] of [[1, 1, 1], [5, 3, 7], [4, 2, 33]]) {
    const C = H * dk, n = rows * C;
    const k = randn(n, 2), a = Float32Array.from({ length: n }, () => 0.5 + 0.5 * rnd());
    const kK = Float32Array.from({ length: C }, () => 1 + 0.5 * rnd()), kA = Float32Array.from({ length: C }, () => 1 + 0.6 * rnd());
    if (rows > 1) for (let i = 0; i < dk; i++) k[C + i] = 1e-4 / Math.sqrt(dk) / kK[i];
    for (const norm of [{ mode: 'add', eps: 1e-6 }, { mode: 'clamp', eps: 1e-12 }] as const) {
      const c = new Float32Array(2 * C + 16);
      c.set(kK, 0);
      c.set(kA, C + 16);
      const b = mk(ACT, 16, c);
      put(b.a, 0, k);
      put(b.a, n, a);
      const kappa = await run([rwkv7Keys(K, b, { kappa: 2 * n, k: 0, a: n, kK: 0, kA: C + 16, rows, H, dk, ...norm })], b.a, 2 * n, n);
      const kOut = await run([], b.a, 0, n);
      const ref = rwkv7KeysRef(k, a, kK, kA, rows, H, dk, norm);
      check(`rwkv7 keys rows${rows} H${H} dk${dk} (${norm.mode}): κ̂`, rel(kappa, ref.kappa), 1e-6);
      check(`rwkv7 keys rows${rows} H${H} dk${dk} (${norm.mode}): k`, rel(kOut, ref.k), 1e-6);
    }
  }

  // --- output head: GroupNorm per head + bonus, gated ---------------------------------------------
  for (const [rows, H, dk, dv] of [[1, 1, 1, 1], [6, 3, 5, 7], [3, 2, 16, 32]]) {
    const nk = rows * H * dk, nv = rows * H * dv;
    const y = randn(nv, 3), r = randn(nk), k = randn(nk), v = randn(nv), g = randn(nv);
    const rK = randn(H * dk, 0.5), gw = randn(H * dv), gb = randn(H * dv, 0.2);
    const c = new Float32Array(H * dk + 2 * H * dv + 32);
    c.set(rK, 0);
    c.set(gw, H * dk + 16);
    c.set(gb, H * dk + H * dv + 32);
    const b = mk(ACT, 16, c);
    put(b.a, 0, y);
    put(b.a, nv, r);
    put(b.a, nv + nk, k);
    put(b.a, nv + 2 * nk, v);
    put(b.a, 2 * nv + 2 * nk, g);
    const eps = dk * 1e-5;
    const got = await run([rwkv7Output(K, b, {
      y: 0, r: nv, k: nv + nk, v: nv + 2 * nk, g: 2 * nv + 2 * nk, rK: 0, gw: H * dk + 16, gb: H * dk + H * dv + 32, rows, H, dk, dv, eps,
    })], b.a, 0, nv);
    check(`rwkv7 output rows${rows} H${H} dk${dk} dv${dv}`, rel(got, rwkv7OutputRef(y, r, k, v, g, rK, gw, gb, rows, H, dk, dv, eps)), 1e-6);
  }

  // --- tanh as softcap(x, 1), into saturation (the decay LoRA's activation) -------------------------
  {
    const n = 301;
    const x = Float32Array.from({ length: n }, (_, i) => (i - 150) * 0.6);
    const b = mk(ACT, 16);
    put(b.a, 0, x);
    const got = await run([K.elementwise(b, EW.softcap, n, 0, 0, n, { s: 1 })], b.a, n, n);
    check('softcap(x, 1) = tanh(x) for |x| ≤ 90', rel(got, Array.from(x, Math.tanh)), 1e-6);
  }

  checks.print(gpu.adapterName);
});
