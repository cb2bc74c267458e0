// WebGPU checks of the recurrent-layer kernels (src/webgpu/kernels/recurrent.wgsl, delta_chunked.wgsl)
// against the WASM kernels and float64 references, on random data at odd sizes, over several tokens
// and from both a fresh state (position 0) and a carried one. Outputs are poisoned with NaN first.
// Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import type { Dispatch } from '../../src/webgpu/ops';
import { instantiate } from '../../src/kernels/runtime';
import { gelu, relu2 } from '../../src/kernels/act';
import { conv1d } from '../../src/kernels/conv';
import { lightningAttention } from '../../src/kernels/linear_attention';
import { rglruScan, wkv4, wkv4InitState } from '../../src/kernels/rnn';
import { convBias, deltaChunked, lightning, RACT, ract, rglru, tokenShift, wkv4 as gpuWkv4 } from '../../src/webgpu/dispatch/recurrent';
import { Checks, gpuBench, nan, rel, rng, withGpu } from './harness';

const { rnd, randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk: bufs, put, run, setStep } = gpuBench(gpu);
  const k = await instantiate({});
  const f32 = (p: number, n: number) => k.arena.f32(p, n).slice();

  const ACT = 1 << 20;
  const mk = (cData?: Float32Array) => bufs(ACT, ACT, cData);
  /** Constants packed at 16-float-aligned offsets. */
  const pack = (parts: Float32Array[]) => {
    const offs: number[] = [];
    let n = 0;
    for (const p of parts) {
      offs.push(n);
      n += Math.ceil(p.length / 16) * 16 + 16;
    }
    const all = new Float32Array(n);
    parts.forEach((p, i) => all.set(p, offs[i]));
    return { all, offs };
  };

  // --- depthwise conv with bias (LFM2 short conv, RG-LRU conv): against the WASM conv1d -----------
  for (const [T, C, W, withBias] of [[5, 37, 3, true], [1, 48, 4, true], [3, 29, 2, false]] as const) {
    const X = randn(T * C), Wt = randn(C * W), Bs = randn(C), S0 = randn(C * (W - 1));
    const { all, offs } = pack([Wt, Bs]);
    const b = mk(all);
    put(b.a, 0, X);
    put(b.st, 0, S0);
    const got = await run([convBias(K, b, 0, offs[0], withBias ? offs[1] : -1, 0, T, C, W)], b.a, 0, T * C);
    const gs = await run([], b.st, 0, C * (W - 1));
    const y = k.arena.f32buf(T * C).ptr, st = k.arena.putF32(S0).ptr;
    conv1d(k, y, k.arena.putF32(X).ptr, k.arena.putF32(Wt).ptr, withBias ? k.arena.putF32(Bs).ptr : 0, st, T, C, W, 'none');
    check(`convBias T${T} C${C} W${W}${withBias ? ' + bias' : ''}`, rel(got, f32(y, T * C)), 1e-6);
    check(`convBias state T${T} C${C} W${W}`, rel(gs, f32(st, C * (W - 1))), 0);
  }

  // --- lightning attention: T tokens from a carried state, against the WASM recurrent form ----------
  for (const [T, H, d] of [[3, 3, 20], [2, 5, 64]]) {
    const n = T * H * d;
    const q = randn(n), kk = randn(n), v = randn(n), S0 = randn(H * d * d, 0.3);
    const slopes = Float32Array.from({ length: H }, () => Math.abs(rnd()) * 0.8);
    const b = mk(slopes);
    put(b.a, 0, q);
    put(b.a, n, kk);
    put(b.a, 2 * n, v);
    put(b.a, 3 * n, nan(n));
    put(b.st, 0, S0);
    const got = await run([lightning(K, b, 3 * n, 0, 0, n, 2 * n, 0, { T, H, d, headStride: d, tokStride: H * d })], b.a, 3 * n, n);
    const gs = await run([], b.st, 0, H * d * d);
    const o = k.arena.f32buf(n).ptr, S = k.arena.putF32(S0).ptr;
    lightningAttention(k, o, S, k.arena.putF32(q).ptr, k.arena.putF32(kk).ptr, k.arena.putF32(v).ptr, k.arena.putF32(slopes).ptr, { T, H, d, blockSize: 16, mode: 'recurrent' });
    check(`lightning T${T} H${H} d${d} output`, rel(got, f32(o, n)), 1e-5);
    check(`lightning T${T} H${H} d${d} state`, rel(gs, f32(S, H * d * d)), 1e-5);
  }

  // --- RWKV-4 WKV: fresh (position 0 starts the state at (0, 0, −1e38)) and carried -----------------
  for (const [T, C, pos] of [[4, 37, 0], [3, 70, 5]]) {
    const key = randn(T * C, 3), value = randn(T * C), decay = randn(C), first = randn(C);
    const S0 = Float32Array.from({ length: 3 * C }, (_, i) => (i < 2 * C ? Math.abs(rnd()) : rnd() * 2));
    const { all, offs } = pack([decay, first]);
    const b = mk(all);
    put(b.a, 0, key);
    put(b.a, T * C, value);
    put(b.a, 2 * T * C, nan(T * C));
    // At position 0 the kernel must ignore whatever the state holds.
    put(b.st, 0, pos === 0 ? nan(3 * C) : S0);
    setStep(b, pos);
    const got = await run([gpuWkv4(K, b, 2 * T * C, 0, 0, T * C, offs[0], offs[1], T, C)], b.a, 2 * T * C, T * C);
    const gs = await run([], b.st, 0, 3 * C);
    const o = k.arena.f32buf(T * C).ptr, st = k.arena.putF32(S0).ptr;
    if (pos === 0) wkv4InitState(k, st, C);
    wkv4(k, o, st, k.arena.putF32(key).ptr, k.arena.putF32(value).ptr, k.arena.putF32(decay).ptr, k.arena.putF32(first).ptr, T, C);
    check(`wkv4 T${T} C${C} from position ${pos}`, rel(got, f32(o, T * C)), 1e-5);
    check(`wkv4 state T${T} C${C} from position ${pos}`, rel(gs, f32(st, 3 * C)), 1e-5);
  }

  // --- RWKV token shift: 3 lerps over 3 tokens -------------------------------------------------------
  {
    const T = 3, D = 45, nMix = 3;
    const X = randn(T * D), shift = randn(D), mix = Float32Array.from({ length: nMix * D }, () => (rnd() + 1) / 2);
    const b = mk(mix);
    put(b.a, 0, X);
    put(b.a, 1024, nan(nMix * T * D));
    put(b.st, 0, shift);
    const got = await run([tokenShift(K, b, 1024, 0, 0, 0, nMix, T, D)], b.a, 1024, nMix * T * D);
    const gs = await run([], b.st, 0, D);
    const want = new Float64Array(nMix * T * D);
    for (let j = 0; j < nMix; j++) for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) {
      const m = mix[j * D + d], x = X[t * D + d], xp = t ? X[(t - 1) * D + d] : shift[d];
      want[j * T * D + t * D + d] = x * m + xp * (1 - m);
    }
    check('token shift (3 mixes, 3 tokens)', rel(got, want), 1e-6);
    check('token shift state', rel(gs, X.subarray((T - 1) * D)), 0);
  }

  // --- RG-LRU: block-diagonal gates + scan, fresh (reset at position 0) and carried ------------------
  for (const [T, H, bw, pos] of [[3, 4, 12, 0], [2, 3, 20, 7]]) {
    const W = H * bw;
    const xb = randn(T * W), y = randn(T * W), Mi = randn(H * bw * bw, 0.4), Ma = randn(H * bw * bw, 0.4);
    const bi = randn(W), ba = randn(W), h0 = randn(W);
    const logA = Float32Array.from({ length: W }, () => -8 * Math.log1p(Math.exp(rnd() * 3)));
    const { all, offs } = pack([Mi, Ma, bi, ba, logA]);
    const b = mk(all);
    put(b.a, 0, xb);
    put(b.a, 4096, y);
    put(b.a, 8192, nan(T * W));
    put(b.st, 0, pos === 0 ? nan(W) : h0);
    setStep(b, pos);
    const got = await run([rglru(K, b, 8192, 0, 0, 4096, { mi: offs[0], ma: offs[1], bi: offs[2], ba: offs[3], logA: offs[4] }, T, W, bw)], b.a, 8192, T * W);
    const gs = await run([], b.st, 0, W);
    // Gates in float64, the scan by the WASM kernel, h ⊙ y in float64.
    const la = new Float32Array(T * W), xg = new Float32Array(T * W);
    for (let t = 0; t < T; t++) for (let c = 0; c < W; c++) {
      const hd = Math.floor(c / bw), j = c % bw;
      let si = bi[c], sa = ba[c];
      for (let m = 0; m < bw; m++) {
        const x = xb[t * W + hd * bw + m];
        si += x * Mi[hd * bw * bw + j * bw + m];
        sa += x * Ma[hd * bw * bw + j * bw + m];
      }
      la[t * W + c] = logA[c] / (1 + Math.exp(-sa));
      xg[t * W + c] = xb[t * W + c] / (1 + Math.exp(-si));
    }
    const hs = k.arena.f32buf(T * W).ptr, hp = k.arena.putF32(h0).ptr;
    let reset = 0;
    if (pos === 0) {
      reset = k.arena.alloc(T, 4);
      k.arena.u8(reset, T).fill(0)[0] = 1;
    }
    rglruScan(k, hs, hp, k.arena.putF32(la).ptr, k.arena.putF32(xg).ptr, reset, T, W);
    const hv = f32(hs, T * W);
    check(`rglru T${T} H${H} bw${bw} from position ${pos}`, rel(got, Array.from(hv, (v, i) => v * y[i])), 1e-5);
    check(`rglru state T${T} H${H} bw${bw} from position ${pos}`, rel(gs, f32(hp, W)), 1e-5);
  }

  // --- activations: relu², gelu_tanh against the WASM kernels --------------------------------------------
  for (const [name, op] of [['relu2', RACT.relu2], ['gelu_tanh', RACT.geluTanh]] as const) {
    const n = 1237, X = randn(n, 4);
    const b = mk();
    put(b.a, 0, X);
    const got = await run([ract(K, b, op, 0, n)], b.a, 0, n);
    const yp = k.arena.f32buf(n).ptr, xp = k.arena.putF32(X).ptr;
    if (op === RACT.relu2) relu2(k, yp, xp, n);
    else gelu(k, yp, xp, n, 'tanh');
    check(`activation ${name}`, rel(got, f32(yp, n)), 2e-6);
  }

  // --- chunked gated delta rule against T applications of the step kernel (K.deltaStep) -------------
  for (const [T, Hv, Hk, dk, dv, chunk, normQK] of [
    [37, 6, 3, 40, 37, 16, true], [5, 2, 2, 128, 70, 16, true], [70, 4, 1, 24, 20, 32, false], [19, 3, 3, 17, 9, 8, true],
  ] as const) {
    const scale = 1 / Math.sqrt(dk), kS = normQK ? 1 : 0.6 / Math.sqrt(dk);
    const q = randn(T * Hk * dk), kk = randn(T * Hk * dk, kS), v = randn(T * Hv * dv), S0 = randn(Hv * dk * dv, 0.3);
    const g = Float32Array.from({ length: T * Hv }, () => -Math.abs(rnd()) * (rnd() > 0.8 ? 4 : 0.3));
    const beta = Float32Array.from({ length: T * Hv }, () => (rnd() + 1) / 2);
    const nq = T * Hk * dk, nv = T * Hv * dv, nS = Hv * dk * dv;
    const Q = 0, Kb = nq, V = 2 * nq, G = V + nv, Bt = G + T * Hv, O1 = Bt + T * Hv + 64, O2 = O1 + nv + 64;
    const b = mk();
    put(b.a, Q, q);
    put(b.a, Kb, kk);
    put(b.a, V, v);
    put(b.a, G, g);
    put(b.a, Bt, beta);
    put(b.a, O1, nan(nv));
    put(b.a, O2, nan(nv));
    put(b.st, 0, S0);
    put(b.st, nS + 64, S0);
    const steps: Dispatch[] = [];
    for (let t = 0; t < T; t++) {
      steps.push(K.deltaStep(b, O2 + t * Hv * dv, nS + 64, Q + t * Hk * dk, Kb + t * Hk * dk, V + t * Hv * dv, G + t * Hv, Bt + t * Hv, { Hv, Hk, dk, dv, scale, normQK }));
    }
    const want = await run(steps, b.a, O2, nv);
    const wantS = await run([], b.st, nS + 64, nS);
    const got = await run([deltaChunked(K, b, O1, 0, Q, Kb, V, G, Bt, { T, Hv, Hk, dk, dv, scale, normQK, chunk })], b.a, O1, nv);
    const gotS = await run([], b.st, 0, nS);
    const name = `deltaChunked T${T} Hv${Hv}/Hk${Hk} dk${dk} dv${dv} chunk ${chunk}${normQK ? '' : ' (no qk norm)'}`;
    check(`${name} output`, rel(got, want), 1e-5);
    check(`${name} state`, rel(gotS, wantS), 1e-5);
  }

  checks.print(gpu.adapterName, { api: gpu.api });
});
