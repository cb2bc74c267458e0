// WebGPU checks of DeepSeek attention: the sparse top-k attention kernels (lightning-indexer scores,
// top-k selection with the WASM tie rule, attention over listed positions) and MLA's per-head
// products on random data at odd sizes against the naive references (src/kernels/attention.ref.ts)
// and the WASM kernels, outputs poisoned with NaN first; then the MLA and DSA mixers of the parity
// fixtures alone, step by step on random hidden states: the layer recorded for the GPU against the
// same layer on the WASM executor. Then sparse top-k attention over Quest pages (attention mode
// 'topk'): page bounds, one query's selection and attention against WASM and the float64 selection
// reference (f32, q8_0 and q4_0 caches, soft-capping, sink logits), and fixtures' attention layers
// loaded with small budgets, GPU vs WASM step by step, and with a covering budget against dense;
// and sparrow-mini loaded with topk, prompt and decode, GPU vs WASM logits.
// Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { readFile } from 'node:fs/promises';
import { headMatmul, indexerScores, sparseAttention, topkSelect } from '../../src/webgpu/dispatch/mla';
import { instantiate } from '../../src/kernels/runtime';
import { dsaIndexerScores, questAppendKeys, questAttend, questScratchBytes, topkSelect as topkSelectWasm } from '../../src/kernels/attention';
import { attendSelectedRef, attentionRef, dsaIndexerScoresRef, questSelectRef, topkRef } from '../../src/kernels/attention.ref';
import { kvRowBytes } from '../../src/kernels/kvcache';
import { dequantKvRowsRef, quantizeKvRowsRef } from '../../src/kernels/kvcache.ref';
import { questAppend, questDecode } from '../../src/webgpu/dispatch/quest';
import { gpuModel } from '../../src/webgpu/model';
import { writeStep } from '../../src/webgpu/ops';
import { openCheckpoint } from '../../src/formats/checkpoint';
import { buildModel } from '../../src/models/index';
import { Attention } from '../../src/layers/attention';
import type { AttentionModeOptions } from '../../src/runtime/attention-mode';
import { loadFixtureModel, type FixtureReference } from '../../tools/parity-lib';
import type { DecoderNet, PreNormBlock } from '../../src/models/decoder';
import type { Graph, Tensor } from '../../src/graph/graph';
import { copy } from '../../src/graph/ops';
import type { Mixer } from '../../src/layers/context';
import type { Net } from '../../src/models/net';
import { HybridLayer, Zamba2Net } from '../../src/models/zamba2';
import { Gemma4Net } from '../../src/models/gemma4';
import { PostNormBlock } from '../../src/models/olmo_hybrid';
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

/**
 * A fixture's full-attention mixer (a decoder's first, Zamba2's last shared-attention use, Gemma 4's
 * first full layer with its own cache), its layer, and its input width (Zamba2's shared attention
 * reads [x, e], 2·hidden wide).
 */
function fullAttention(net: Net, maxContext: number): { layer: number; mixer: Mixer; width: number } {
  if (net instanceof Zamba2Net) {
    let layer = -1;
    net.d.layers.forEach((l, i) => {
      if (l instanceof HybridLayer) layer = i;
    });
    return { layer, mixer: (net.d.layers[layer] as HybridLayer).attn, width: 2 * net.hidden };
  }
  if (net instanceof Gemma4Net) {
    const layer = net.blocks.findIndex((bl) => bl.attn.window === undefined && !bl.attn.source);
    const attn = net.blocks[layer].attn;
    return { layer, mixer: { specs: (n) => attn.specs(n), forward: (g, x, out) => attn.forward(g, x, out, null) }, width: net.hidden };
  }
  const blocks = (net as DecoderNet).d.blocks;
  // OLMo Hybrid's attention layers are post-norm blocks.
  const mixerOf = (bl: unknown) => (bl instanceof PostNormBlock ? bl.mixer : (bl as PreNormBlock).s.mixer);
  const layer = blocks.findIndex((bl) => {
    const m = mixerOf(bl);
    return m instanceof Attention ? !m.cfg.window : m.specs(maxContext).some((r) => r.kind === 'kv');
  });
  return { layer, mixer: mixerOf(blocks[layer]), width: net.hidden };
}

await withGpu(async (gpu) => {
  const { K, dev, mk: bufs, put, poison, run, read, setStep } = gpuBench(gpu);
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

  // --- Quest pages (attention mode 'topk'): page bounds, and one query over sinks ∪ pages ∪ window ---
  {
    // Page bounds folded in chunks of rows, GPU vs WASM questAppendKeys (min / max: exact).
    for (const [P, nKv, D, n, chunk] of [[5, 2, 17, 47, 3], [16, 3, 24, 100, 16], [7, 1, 64, 30, 1]]) {
      const W = nKv * D, maxPages = Math.ceil(n / P) + 1, Kf = randn(n * W, 2);
      const b = mk();
      put(b.a, 0, Kf);
      const shape = { nHeads: nKv, nKv, headDim: D, vDim: D, pageSize: P, pages: 1, sinks: 0, window: 1, maxPages };
      for (let p0 = 0; p0 < n; p0 += chunk) {
        setStep(b, p0);
        await run([questAppend(K, b, 0, p0 * W, Math.min(chunk, n - p0), W, shape)], b.st, 0, 1);
      }
      const got = await read(b.st, 0, 2 * maxPages * W);
      const mn = k.arena.f32buf(maxPages * W), mx = k.arena.f32buf(maxPages * W);
      questAppendKeys(k, mn.ptr, mx.ptr, k.arena.putF32(Kf).ptr, n, 0, P, maxPages, nKv, D);
      const used = Math.ceil(n / P) * W;
      const want = [...mn.v.subarray(0, used), ...mx.v.subarray(0, used)];
      check(`quest page bounds P=${P} nKv=${nKv} D=${D} n=${n} in chunks of ${chunk}: GPU vs WASM`, rel([...got.subarray(0, used), ...got.subarray(maxPages * W, maxPages * W + used)], want), 0);
    }
    // One query: GPU questDecode vs WASM questAttend and the float64 selection reference.
    const cases = [
      { pos: 100, Hq: 4, Hkv: 2, D: 17, Dv: 9, P: 7, pages: 3, sinks: 3, window: 11 },
      { pos: 257, Hq: 6, Hkv: 3, D: 32, Dv: 32, P: 16, pages: 4, sinks: 4, window: 20, softcap: 3 },
      { pos: 333, Hq: 8, Hkv: 1, D: 64, Dv: 64, P: 32, pages: 2, sinks: 0, window: 1, sinkLogits: true },
      { pos: 150, Hq: 4, Hkv: 2, D: 32, Dv: 64, P: 9, pages: 4, sinks: 2, window: 10, cache: 'q8_0' as const },
      { pos: 170, Hq: 6, Hkv: 3, D: 32, Dv: 32, P: 8, pages: 5, sinks: 4, window: 9, cache: 'q4_0' as const },
      { pos: 40, Hq: 4, Hkv: 2, D: 17, Dv: 9, P: 7, pages: 3, sinks: 3, window: 20 },
    ];
    for (const c of cases) {
      const n = c.pos + 1, W = c.Hkv * c.D, maxPages = Math.ceil(n / c.P) + 1, cache = c.cache ?? 'f32';
      const q = randn(c.Hq * c.D, 1.5), Kf = randn(n * W, 1.5), Vf = randn(n * c.Hkv * c.Dv);
      for (let p = 0; p < n; p++) for (let i = 0; i < W; i++) Kf[p * W + i] += Math.sin(p / 9 + i) * 1.5;
      const sinkLogits = c.sinkLogits ? randn(c.Hq, 2) : undefined;
      const scale = 1 / Math.sqrt(c.D);
      const shape = { nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, pageSize: c.P, pages: c.pages, sinks: c.sinks, window: c.window, maxPages };
      // WASM: bounds, caches (quantized rows as the append writes them), questAttend.
      const mn = k.arena.f32buf(maxPages * W), mx = k.arena.f32buf(maxPages * W);
      questAppendKeys(k, mn.ptr, mx.ptr, k.arena.putF32(Kf).ptr, n, 0, c.P, maxPages, c.Hkv, c.D);
      let kw: Uint32Array | Float32Array = Kf, vw: Uint32Array | Float32Array = Vf, strides = {}, gpuStrides = {};
      let Kr: ArrayLike<number> = Kf, Vr: ArrayLike<number> = Vf;
      if (cache !== 'f32') {
        const kb = kvRowBytes(cache, c.Hkv, c.D), vb = kvRowBytes(cache, c.Hkv, c.Dv);
        const kq = quantizeKvRowsRef(cache, Kf, n, c.Hkv, c.D), vq = quantizeKvRowsRef(cache, Vf, n, c.Hkv, c.Dv);
        kw = new Uint32Array(kq.buffer, kq.byteOffset, kq.byteLength / 4);
        vw = new Uint32Array(vq.buffer, vq.byteOffset, vq.byteLength / 4);
        Kr = dequantKvRowsRef(cache, kq, n, c.Hkv, c.D);
        Vr = dequantKvRowsRef(cache, vq, n, c.Hkv, c.Dv);
        strides = { cache, kStride: kb, vStride: vb };
        gpuStrides = { cache, kStride: kb / 4, vStride: vb / 4 };
      }
      const kc = k.arena.alloc(kw.byteLength), vc = k.arena.alloc(vw.byteLength);
      k.arena.u8(kc, kw.byteLength).set(new Uint8Array(kw.buffer, kw.byteOffset, kw.byteLength));
      k.arena.u8(vc, vw.byteLength).set(new Uint8Array(vw.buffer, vw.byteOffset, vw.byteLength));
      const scratch = k.arena.alloc(questScratchBytes({ nKv: c.Hkv, maxPages, pages: c.pages, pageSize: c.P, sinkPositions: c.sinks, window: c.window }));
      const O = k.arena.f32buf(c.Hq * c.Dv);
      questAttend(k, O.ptr, k.arena.putF32(q).ptr, kc, vc, mn.ptr, mx.ptr, scratch, {
        pos: c.pos, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale, softcap: c.softcap, sinks: sinkLogits ? k.arena.putF32(sinkLogits).ptr : undefined,
        pageSize: c.P, pages: c.pages, sinkPositions: c.sinks, window: c.window, maxPages, ...strides,
      });
      // GPU: keys folded by questAppend, caches in st, the four Quest dispatches.
      const kOff = 0, vOff = 1 << 18, bOff = 1 << 19, out = 1 << 17, scr = 1 << 18, attnScores = 1 << 19;
      const b = bufs(ACT, ACT, sinkLogits ?? new Float32Array(4));
      put(b.a, 0, q);
      put(b.a, 4096, Kf);
      put(b.st, kOff, kw);
      put(b.st, vOff, vw);
      poison(b.a, out, c.Hq * c.Dv);
      setStep(b, 0);
      await run([questAppend(K, b, bOff, 4096, n, W, shape)], b.a, 0, 1);
      setStep(b, c.pos);
      const decode = questDecode(K, b, out, 0, kOff, vOff, bOff, scr, { ...shape, scale, scores: attnScores, maxN: n, softcap: c.softcap, sinkLogits: sinkLogits ? 0 : undefined, ...gpuStrides });
      const got = await run(decode, b.a, out, c.Hq * c.Dv);
      const name = `quest decode pos=${c.pos} ${c.Hq}/${c.Hkv} heads D=${c.D} Dv=${c.Dv} page ${c.P}×${c.pages} sinks ${c.sinks} window ${c.window} ${cache}${c.softcap ? ' softcap' : ''}${sinkLogits ? ' sink logits' : ''}`;
      check(`${name}: GPU vs WASM`, rel(got, O.v), 1e-5);
      const lists = questSelectRef(q, Kf, c.pos, { nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, pageSize: c.P, pages: c.pages, sinks: c.sinks, window: c.window });
      const G = c.Hq / c.Hkv, want = new Float64Array(c.Hq * c.Dv);
      for (let g = 0; g < c.Hkv; g++) {
        const Kg = new Float64Array(n * c.D), Vg = new Float64Array(n * c.Dv);
        for (let p = 0; p < n; p++) {
          for (let i = 0; i < c.D; i++) Kg[p * c.D + i] = Kr[(p * c.Hkv + g) * c.D + i];
          for (let i = 0; i < c.Dv; i++) Vg[p * c.Dv + i] = Vr[(p * c.Hkv + g) * c.Dv + i];
        }
        want.set(attendSelectedRef(q.subarray(g * G * c.D, (g + 1) * G * c.D), Kg, Vg, lists[g], lists[g].length, {
          nHeads: G, nKv: 1, headDim: c.D, vDim: c.Dv, scale, softcap: c.softcap, sinks: sinkLogits?.subarray(g * G, (g + 1) * G),
        }), g * G * c.Dv);
      }
      check(`${name}: GPU vs the selection reference`, rel(got, want), 2e-5);
      // The same position as a prompt row (step.prompt): dense attention over all n positions.
      writeStep(dev, b.step, 0, c.pos, true);
      poison(b.a, out, c.Hq * c.Dv);
      const prompt = await run(decode, b.a, out, c.Hq * c.Dv);
      const dense = attentionRef(q, Kr, Vr, { T: 1, qPos0: c.pos, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale, softcap: c.softcap, sinks: sinkLogits });
      check(`${name}, as a prompt row: GPU vs dense attention`, rel(prompt, dense), 2e-5);
    }

    // The attention mixers of fixtures loaded with small budgets, alone, GPU vs WASM, step by step
    // (dense while the context is within the budget, sparse after); and with a covering budget
    // against the dense recording.
    for (const [name, kv] of [
      ['llama-llama3rope-bias', 'f32'], ['gptoss-sinks', 'f32'], ['gemma2-softcap-swa', 'q8_0'], ['qwen3-mqa-headdim32', 'q4_0'],
      ['bitnet-online', 'f32'], ['bitnet-online-bias-tied', 'q8_0'], ['zamba2-gqa-bias', 'q4_0'], ['zamba2-shared-adapters', 'f32'],
      ['gemma4-ple-kvshare', 'f32'], ['gemma4-moe', 'q8_0'], ['olmohybrid-rope-gqa', 'q4_0'], ['olmohybrid-nope-tied', 'f32'],
    ] as const) {
      const dir = `test/fixtures/parity/${name}`;
      const ref: FixtureReference = JSON.parse(await readFile(`${dir}/reference.json`, 'utf8'));
      const run1 = async (attention: AttentionModeOptions | undefined, steps: number) => {
        const model = await loadFixtureModel(dir, ref, { kvCache: kv, maxContext: 64, ...(attention ? { attention } : {}) });
        const D = model.net.hidden;
        const { layer, mixer, width: W } = fullAttention(model.net, model.maxContext);
        // Input and output rows W wide; a mixer of a wider input writes the first D of the output row.
        const fn = (g: Graph, xx: Tensor, yy: Tensor) => {
          if (W === D) return mixer.forward(g, xx, yy);
          const t = g.tmp(D);
          mixer.forward(g, xx, t);
          copy(g, yy, t, { chunks: 1, len: D });
        };
        const { B, g, x, y: o } = gpuLayer(model, K, W, fn, `layer ${layer}`);
        const b = bufs(g.act.high, B.stateFloats, B.packConsts(), model.maxContext + 2);
        const list = g.emits.flatMap((e) => e(b));
        const sess = model.newSession();
        const wasm = wasmLayer(model, W, fn, 1);
        const r = rng(77);
        let worst = 0;
        const outs: Float32Array[] = [];
        for (let t = 0; t < steps; t++) {
          const X = r.randn(W, 1.5);
          const want = wasm(sess, X, t).subarray(0, D);
          put(b.a, x, X);
          poison(b.a, o, W);
          setStep(b, t);
          const got = (await run(list, b.a, o, W)).subarray(0, D);
          outs.push(got);
          worst = Math.max(worst, rel(got, want));
        }
        sess.dispose();
        model.dispose();
        return { worst, outs, layer };
      };
      const steps = 60;
      const sparse = await run1({ mode: 'topk', pageSize: 4, pages: 3, sinks: 2, window: 7 }, steps);
      check(`${name} (${kv}) layer ${sparse.layer} attention, topk page 4×3 sinks 2 window 7, ${steps} steps: GPU vs WASM`, sparse.worst, 1e-5);
      const dense = await run1(undefined, 30), covering = await run1({ mode: 'topk' }, 30);
      let d = 0;
      dense.outs.forEach((v, i) => { d = Math.max(d, rel(covering.outs[i], v)); });
      check(`${name} (${kv}) layer ${dense.layer} attention, topk with a covering budget vs dense, 30 steps (GPU): bit for bit`, d, 0);
    }
  }

  // --- a whole model with topk: sparrow-mini, a 133-token prompt (the 128-token recording, then row
  // by row) and 40 sparse decode steps, GPU vs WASM logits ------------------------------------------
  {
    const attention = { mode: 'topk', pageSize: 16, pages: 2, sinks: 4, window: 32 } as const;
    const model = await buildModel(await openCheckpoint('models/sparrow-mini'), { exact: true, maxContext: 200, attention });
    const gm = gpuModel(model, gpu);
    const prompt = Array.from({ length: 133 }, (_, i) => 300 + ((i * 37) % 900));
    const ws = model.newSession(), gs = gm.newSession();
    let worst = rel(await gs.forward(prompt), ws.forward(prompt));
    let agree = 0;
    const V = model.net.vocabSize;
    for (let t = 0; t < 40; t++) {
      const id = 500 + ((t * 53) % 700);
      const want = ws.forward([id]), got = await gs.forward([id]);
      worst = Math.max(worst, rel(got, want));
      let a = 0, b = 0;
      for (let v = 1; v < V; v++) {
        if (got[v] > got[a]) a = v;
        if (want[v] > want[b]) b = v;
      }
      if (a === b) agree++;
    }
    check('sparrow-mini with topk page 16×2 sinks 4 window 32: 133-token prompt + 40 sparse decode steps, GPU vs WASM logits', worst, 1e-5);
    check('sparrow-mini with topk: argmax agrees at every decode step', 40 - agree, 0);
    gs.dispose();
    ws.dispose();
    model.dispose();
  }

  checks.print(gpu.adapterName, { api: gpu.api });
});
