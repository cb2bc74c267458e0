// WebGPU checks of DeepSeek attention: the sparse top-k attention kernels (lightning-indexer scores,
// top-k selection with the WASM tie rule, attention over listed positions) and MLA's per-head
// products on random data at odd sizes against the naive references (src/kernels/attention.ref.ts)
// and the WASM kernels, outputs poisoned with NaN first; then the MLA and DSA mixers of the parity
// fixtures alone, step by step on random hidden states: the layer recorded for the GPU against the
// same layer on the WASM executor.
// Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { readFile } from 'node:fs/promises';
import { headMatmul, indexerScores, sparseAttention, topkSelect } from '../../src/webgpu/dispatch/mla';
import { instantiate } from '../../src/kernels/runtime';
import { dsaIndexerScores, topkSelect as topkSelectWasm } from '../../src/kernels/attention';
import { attendSelectedRef, attentionRef, dsaIndexerScoresRef, topkRef } from '../../src/kernels/attention.ref';
import { loadFixtureModel, type FixtureReference } from '../../tools/parity-lib';
import type { DecoderNet, PreNormBlock } from '../../src/models/decoder';
import type { Mixer } from '../../src/layers/context';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';
import { gpuLayer, wasmLayer } from './layers';

const { rnd, randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

/** Number of positions where two index lists differ (length mismatch counts fully). */
function listDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.max(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d++;
  return d;
}

await withGpu(async (gpu) => {
  const { K, mk: bufs, put, poison, run, setStep } = gpuBench(gpu);
  const k = await instantiate({});

  const ACT = 1 << 20;
  const mk = () => bufs(ACT, ACT);

  // --- lightning-indexer scores: n cached keys (rows kStride apart), Hi heads of Di dims -------------
  for (const [n, Hi, Di, kStride] of [[37, 5, 24, 27], [1, 3, 16, 16], [301, 4, 16, 16]]) {
    const q = randn(Hi * Di), w = randn(Hi), kc = randn(n * kStride);
    const packed = new Float32Array(n * Di);
    for (let s = 0; s < n; s++) packed.set(kc.subarray(s * kStride, s * kStride + Di), s * Di);
    const b = mk();
    put(b.a, 0, q);
    put(b.a, 1024, w);
    put(b.st, 0, kc);
    poison(b.a, 4096, n + 8);
    setStep(b, n - 1);
    const got = await run([indexerScores(K, b, 4096, 0, 1024, 0, { Hi, Di, maxN: n + 64, scale: 1 / Math.sqrt(Di) / Math.sqrt(Hi), kStride })], b.a, 4096, n + 8);
    check(`indexer scores n=${n} Hi=${Hi} Di=${Di} vs ref`, rel(got.subarray(0, n), dsaIndexerScoresRef(q, w, packed, n, Hi, Di)), 1e-5);
    check(`indexer scores n=${n}: nothing written past n`, got.subarray(n).every((v) => Number.isNaN(v)) ? 0 : 1, 0);
    const qp = k.arena.putF32(q).ptr, wp = k.arena.putF32(w).ptr, kp = k.arena.putF32(kc).ptr, op = k.arena.f32buf(n).ptr;
    dsaIndexerScores(k, op, qp, wp, kp, n, Hi, Di, { kStride });
    check(`indexer scores n=${n} vs WASM`, rel(got.subarray(0, n), k.arena.f32(op, n)), 1e-5);
  }

  // --- top-k selection: ties, k ≥ n, −Infinity, large n --------------------------------------------
  const topkCases: { name: string; scores: Float32Array; topk: number }[] = [];
  for (const n of [1, 5, 37, 300, 1001]) {
    for (const topk of [1, 7, n - 1, n, n + 5]) {
      if (topk < 1) continue;
      topkCases.push({ name: `random n=${n} k=${topk}`, scores: randn(n, 4), topk });
    }
    // Heavy ties: a handful of distinct values (including 0 and negatives), ties broken by position.
    topkCases.push({ name: `ties n=${n} k=${Math.ceil(n / 3)}`, scores: Float32Array.from({ length: n }, () => Math.round(rnd() * 2) / 2), topk: Math.ceil(n / 3) });
  }
  {
    const s = randn(77);
    for (let i = 0; i < 77; i += 3) s[i] = -Infinity;
    topkCases.push({ name: 'masked (−Infinity) n=77 k=40', scores: s, topk: 40 });
    topkCases.push({ name: 'all equal n=513 k=100', scores: new Float32Array(513).fill(0.25), topk: 100 });
    const big = randn(4099);
    big[4000] = 1e30; big[17] = 1e30; big[3] = -1e30;
    topkCases.push({ name: 'n=4099 k=2048 (two equal maxima)', scores: big, topk: 2048 });
  }
  let topkBad = 0, topkWasmBad = 0, topkPoisonBad = 0;
  const topkFailures: string[] = [];
  for (const c of topkCases) {
    const n = c.scores.length, m = Math.min(n, c.topk);
    const b = mk();
    put(b.a, 0, c.scores);
    poison(b.a, 8192, m + 4);
    setStep(b, n - 1);
    const got = await run([topkSelect(K, b, 8192, 0, c.topk)], b.a, 8192, m + 4);
    const ref = topkRef(c.scores, c.topk);
    const d = listDiff(Array.from(got.subarray(0, m)), ref);
    if (d) {
      topkBad++;
      topkFailures.push(c.name);
    }
    if (!got.subarray(m).every((v) => Number.isNaN(v))) topkPoisonBad++;
    const sp = k.arena.putF32(c.scores).ptr, ip = k.arena.alloc(Math.max(m, 1) * 4, 4);
    const mw = topkSelectWasm(k, ip, sp, n, c.topk);
    if (mw !== m || listDiff(Array.from(got.subarray(0, m)), Array.from(k.arena.i32(ip, m))) !== 0) topkWasmBad++;
  }
  check(`topk select vs topkRef (${topkCases.length} cases${topkFailures.length ? `; failed: ${topkFailures.join(', ')}` : ''})`, topkBad, 0);
  check(`topk select vs WASM topkSelect (${topkCases.length} cases)`, topkWasmBad, 0);
  check('topk select writes exactly min(k, n) positions', topkPoisonBad, 0);

  // --- attention over listed positions (GQA, strided caches) and over every position ---------------
  for (const [nHeads, nKv, D, Dv, n, topk] of [[6, 2, 40, 24, 45, 13], [4, 1, 24, 16, 9, 20], [5, 1, 83, 31, 300, 64]]) {
    const scale = 1 / Math.sqrt(D), kStride = nKv * D + 3, vStride = nKv * Dv + 5;
    const q = randn(nHeads * D), Kp = randn(n * nKv * D), Vp = randn(n * nKv * Dv);
    const kc = new Float32Array(n * kStride), vc = new Float32Array(n * vStride);
    for (let s = 0; s < n; s++) {
      kc.set(Kp.subarray(s * nKv * D, (s + 1) * nKv * D), s * kStride);
      vc.set(Vp.subarray(s * nKv * Dv, (s + 1) * nKv * Dv), s * vStride);
    }
    const sc = randn(n);
    const sel = topkRef(sc, topk), m = sel.length;
    const b = mk();
    put(b.a, 0, q);
    put(b.a, 4096, sc);
    put(b.st, 0, kc);
    put(b.st, 131072, vc);
    const o = 16384;
    poison(b.a, o, nHeads * Dv);
    poison(b.a, 8192, topk + 4);
    setStep(b, n - 1);
    const opts = { nHeads, nKv, headDim: D, vDim: Dv, scale, kStride, vStride, scores: 32768, maxN: Math.min(topk, n) };
    const got = await run([topkSelect(K, b, 8192, 4096, topk), sparseAttention(K, b, o, 0, 0, 131072, { ...opts, idx: { off: 8192, topk } })], b.a, o, nHeads * Dv);
    check(`sparse attention ${nHeads}/${nKv} heads D=${D} n=${n} top-${topk} (${m} picked)`, rel(got, attendSelectedRef(q, Kp, Vp, sel, m, { nHeads, nKv, headDim: D, vDim: Dv, scale })), 1e-5);
    poison(b.a, o, nHeads * Dv);
    const dense = await run([sparseAttention(K, b, o, 0, 0, 131072, { ...opts, maxN: n })], b.a, o, nHeads * Dv);
    check(`dense attention ${nHeads}/${nKv} heads D=${D} n=${n}`, rel(dense, attentionRef(q, Kp, Vp, { T: 1, qPos0: n - 1, nHeads, nKv, headDim: D, vDim: Dv, scale })), 1e-5);
  }

  // MLA's shape: one latent kv head, keys the whole row [c | k_rope] (576-wide in DeepSeek), values its first R floats.
  {
    const H = 3, R = 512, dR = 64, Lw = R + dR, n = 21, topk = 8, scale = 0.07;
    const q = randn(H * Lw, 0.2), lat = randn(n * Lw, 0.2);
    const Kp = lat, Vp = new Float32Array(n * R);
    for (let s = 0; s < n; s++) Vp.set(lat.subarray(s * Lw, s * Lw + R), s * R);
    const sc = Float32Array.from({ length: n }, (_, i) => (i % 4 === 0 ? 0 : rnd()));
    const sel = topkRef(sc, topk);
    const b = mk();
    put(b.a, 0, q);
    put(b.a, 4096, sc);
    put(b.st, 0, lat);
    poison(b.a, 16384, H * R);
    setStep(b, n - 1);
    const got = await run([
      topkSelect(K, b, 8192, 4096, topk),
      sparseAttention(K, b, 16384, 0, 0, 0, { nHeads: H, nKv: 1, headDim: Lw, vDim: R, scale, kStride: Lw, vStride: Lw, scores: 32768, maxN: topk, idx: { off: 8192, topk } }),
    ], b.a, 16384, H * R);
    check(`sparse MLA-shaped attention (latent ${Lw}, values ${R}, top-${topk} of ${n})`, rel(got, attendSelectedRef(q, Kp, Vp, sel, sel.length, { nHeads: H, nKv: 1, headDim: Lw, vDim: R, scale })), 1e-5);
  }

  // --- per-head products (absorbed W_UK_hᵀ q_nope_h and W_UV_h o_h) -----------------------------------
  for (const [heads, rows, cols, gap] of [[3, 37, 20, 11], [4, 16, 512, 0]]) {
    const wHeadStride = rows * cols + gap;
    const W = randn(heads * wHeadStride + 7), xStride = cols + 5, yStride = rows + 3;
    const X = randn(heads * xStride);
    const gw = { buf: K.upload(W), dtype: 'f32' as const, rows: 1, cols: W.length, off: 0, eStride: 0 };
    const b = mk();
    put(b.a, 0, X);
    poison(b.a, 8192, heads * yStride);
    const got = await run([headMatmul(K, b, 8192, 0, gw, { rows, cols, heads, wOff: 7, wHeadStride, xStride, yStride })], b.a, 8192, heads * yStride);
    const want = new Float64Array(heads * yStride).fill(NaN);
    for (let z = 0; z < heads; z++) {
      for (let r = 0; r < rows; r++) {
        let s = 0;
        for (let i = 0; i < cols; i++) s += W[7 + z * wHeadStride + r * cols + i] * X[z * xStride + i];
        want[z * yStride + r] = s;
      }
    }
    const sel = (a: ArrayLike<number>) => Array.from({ length: heads * rows }, (_, i) => a[Math.floor(i / rows) * yStride + (i % rows)]);
    check(`head matmul ${heads}×${rows}x${cols}`, rel(sel(got), sel(want)), 1e-5);
  }

  // --- the fixtures' MLA / DSA mixers alone, GPU vs WASM, on random hidden states ---------------------
  for (const name of ['deepseekv3-mla', 'deepseekv32-dsa']) {
    const dir = `test/fixtures/parity/${name}`;
    const ref: FixtureReference = JSON.parse(await readFile(`${dir}/reference.json`, 'utf8'));
    const model = await loadFixtureModel(dir, ref);
    const net = model.net as DecoderNet;
    const D = net.hidden, steps = Math.min(model.maxContext, 40);
    for (const layer of [0, net.d.blocks.length - 1]) {
      const mixer = (net.d.blocks[layer] as PreNormBlock).s.mixer as Mixer;
      const { B, g, x, y: o } = gpuLayer(model, K, D, (g, xx, yy) => mixer.forward(g, xx, yy), `layer ${layer}`);
      const b = bufs(g.act.high, B.stateFloats, B.packConsts(), model.maxContext + 2);
      const list = g.emits.flatMap((e) => e(b));
      const sess = model.newSession();
      const wasm = wasmLayer(model, D, (g, xx, yy) => mixer.forward(g, xx, yy), 1);
      let worst = 0;
      for (let t = 0; t < steps; t++) {
        const X = randn(D, 1.5);
        const want = wasm(sess, X, t);
        put(b.a, x, X);
        poison(b.a, o, D);
        setStep(b, t);
        const got = await run(list, b.a, o, D);
        worst = Math.max(worst, rel(got, want));
      }
      check(`${name} layer ${layer} ${mixer.constructor.name} alone, ${steps} steps: GPU vs WASM`, worst, 1e-5);
      sess.dispose();
    }
    model.dispose();
  }

  checks.print(gpu.adapterName, { api: gpu.api });
});
