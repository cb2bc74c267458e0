// Quantized KV caches on WebGPU: the cache append (kv_quantize) against the reference quantizer of
// src/kernels/kvcache.ref.ts (the same bytes WASM writes), the attention kernels over quantized rows
// (GQA decode with windows, soft-capping and sinks over pass rows; MLA-shaped rows, listed positions)
// against the float64 reference over the values the rows hold, and models of the parity fixtures
// loaded with kvCache q8_0 / q4_0: GPU prefill and decode against the WASM forward pass of the same
// model, snapshots across the backends, and the refusal of a snapshot of another cache type.
// Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeAttention, kvQuantize } from '../../src/webgpu/dispatch/attention';
import { sparseAttention, topkSelect } from '../../src/webgpu/dispatch/mla';
import { attendSelectedRef, attentionRef, topkRef } from '../../src/kernels/attention.ref';
import { kvHeadBytes, kvRowBytes } from '../../src/kernels/kvcache';
import { dequantKvRowsRef, quantizeKvRowsRef } from '../../src/kernels/kvcache.ref';
import { SnapshotError } from '../../src/runtime/state';
import { gpuModel } from '../../src/webgpu/model';
import { loadFixtureModel, type FixtureReference } from '../../tools/parity-lib';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { randn } = rng(777);
const checks = new Checks();
const { check, ok } = checks;
const TYPES = ['q8_0', 'q4_0'] as const;

/** The words of quantized rows (a whole number of words each). */
const words = (bytes: Uint8Array) => new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);

await withGpu(async (gpu) => {
  const { K, mk, put, poison, run, setStep } = gpuBench(gpu);

  // --- the cache append: rows of a pass at positions step.pos + r ---------------------------------
  for (const type of TYPES) {
    for (const [heads, dim, rows, pos] of [[2, 16, 3, 5], [3, 40, 4, 0], [1, 72, 1, 9], [4, 64, 2, 1], [1, 24, 5, 3]]) {
      const xRow = heads * dim + 5, rb = kvRowBytes(type, heads, dim), rowWords = rb / 4;
      const X = randn(rows * xRow, 2);
      X[0] = 0;
      X[1] = 0.5;
      const b = mk(65536, 65536);
      put(b.a, 0, X);
      setStep(b, pos);
      const cOff = 100;
      const got = await run([kvQuantize(K, b, type, cOff, 0, { heads, dim, rows, xRow, rowWords })], b.st, cOff + pos * rowWords, rows * rowWords);
      const dense = new Float32Array(rows * heads * dim);
      for (let r = 0; r < rows; r++) dense.set(X.subarray(r * xRow, r * xRow + heads * dim), r * heads * dim);
      const want = quantizeKvRowsRef(type, dense, rows, heads, dim);
      const gotBytes = new Uint8Array(got.buffer, got.byteOffset, got.byteLength);
      let diff = 0;
      for (let i = 0; i < want.length; i++) if (gotBytes[i] !== want[i]) diff++;
      // GPU division is within 2.5 ulp, so a value next to a rounding boundary may round the other way on hardware.
      check(`kv_quantize ${type} ${heads}×${dim}, ${rows} rows at ${pos}: bytes differing from the reference quantizer (fraction)`, diff / want.length, gpu.software ? 0 : 0.01);
      const held = dequantKvRowsRef(type, gotBytes, rows, heads, dim);
      check(`kv_quantize ${type} ${heads}×${dim}: the values held against the inputs (max rel)`, rel(held, dense), type === 'q8_0' ? 8e-3 : 1.3e-1);
    }
  }

  // --- decode attention over quantized rows ---------------------------------------------------------
  type Case = { nHeads: number; nKv: number; D: number; Dv: number; n: number; window?: number; softcap?: number; sinks?: boolean; rows?: number };
  const cases: Case[] = [
    { nHeads: 6, nKv: 2, D: 40, Dv: 24, n: 45, window: 7 },
    { nHeads: 4, nKv: 1, D: 16, Dv: 16, n: 29, softcap: 0.7 },
    { nHeads: 7, nKv: 1, D: 64, Dv: 64, n: 37, sinks: true },
    { nHeads: 6, nKv: 3, D: 72, Dv: 72, n: 77, window: 13, softcap: 3, sinks: true },
    { nHeads: 4, nKv: 2, D: 32, Dv: 32, n: 40, rows: 5 },
  ];
  for (const type of TYPES) {
    for (const cs of cases) {
      const { nHeads, nKv, D, Dv, n } = cs;
      const R = cs.rows ?? 1, pos0 = n - R;
      const scale = 1.7 / Math.sqrt(D);
      const q = randn(R * nHeads * D), Kc = randn(n * nKv * D), Vc = randn(n * nKv * Dv);
      const sinks = cs.sinks ? randn(nHeads, 3) : undefined;
      const kb = quantizeKvRowsRef(type, Kc, n, nKv, D), vb = quantizeKvRowsRef(type, Vc, n, nKv, Dv);
      const kw = kb.length / 4 / n, vw = vb.length / 4 / n;
      const maxN = n + 9, kOff = 8, vOff = kOff + kb.length / 4 + 4;
      const b = mk(65536 + R * nHeads * maxN, vOff + vb.length / 4 + 64, sinks ? Float32Array.from([0, 0, 0, 0, ...sinks]) : undefined);
      put(b.a, 0, q);
      put(b.st, kOff, words(kb));
      put(b.st, vOff, words(vb));
      setStep(b, pos0);
      const oOff = 32768;
      poison(b.a, oOff, R * nHeads * Dv);
      const got = await run([decodeAttention(K, b, oOff, 0, kOff, vOff, {
        nHeads, nKv, headDim: D, vDim: Dv, scale, scores: 65536, maxN, window: cs.window, softcap: cs.softcap, sinks: sinks ? 4 : undefined,
        rows: R, cache: type, kStride: kw, vStride: vw,
      })], b.a, oOff, R * nHeads * Dv);
      const want = attentionRef(q, dequantKvRowsRef(type, kb, n, nKv, D), dequantKvRowsRef(type, vb, n, nKv, Dv),
        { T: R, qPos0: pos0, nHeads, nKv, headDim: D, vDim: Dv, scale, window: cs.window, softcap: cs.softcap, sinks });
      const tags = [cs.window ? `window ${cs.window}` : '', cs.softcap ? `softcap ${cs.softcap}` : '', cs.sinks ? 'sinks' : '', R > 1 ? `${R} rows` : ''].filter(Boolean).join(', ');
      check(`attention over ${type} rows ${nHeads}/${nKv} D ${D} Dv ${Dv} n=${n}${tags ? ` (${tags})` : ''}`, rel(got, want), 1e-5);
    }

    // MLA's shape: one latent head, values the first R values of each row; listed positions and all.
    const H = 3, Rv = 64, Lw = 96, n = 21, topk = 8, scale = 0.2;
    const q = randn(H * Lw), lat = randn(n * Lw);
    const lb = quantizeKvRowsRef(type, lat, n, 1, Lw), lw = lb.length / 4 / n;
    const held = dequantKvRowsRef(type, lb, n, 1, Lw);
    const Vp = new Float32Array(n * Rv);
    for (let s = 0; s < n; s++) Vp.set(held.subarray(s * Lw, s * Lw + Rv), s * Rv);
    const sc = randn(n);
    const sel = topkRef(sc, topk);
    const b = mk(65536, 65536);
    put(b.a, 0, q);
    put(b.a, 4096, sc);
    put(b.st, 0, words(lb));
    poison(b.a, 16384, H * Rv);
    setStep(b, n - 1);
    const opts = { nHeads: H, nKv: 1, headDim: Lw, vDim: Rv, scale, kStride: lw, vStride: lw, scores: 32768, cache: type };
    const got = await run([topkSelect(K, b, 8192, 4096, topk), sparseAttention(K, b, 16384, 0, 0, 0, { ...opts, maxN: topk, idx: { off: 8192, topk } })], b.a, 16384, H * Rv);
    check(`listed-position attention over ${type} latent rows (${Lw} wide, values ${Rv}, top-${topk} of ${n})`, rel(got, attendSelectedRef(q, held, Vp, sel, sel.length, { nHeads: H, nKv: 1, headDim: Lw, vDim: Rv, scale })), 1e-5);
    poison(b.a, 16384, H * Rv);
    const dense = await run([sparseAttention(K, b, 16384, 0, 0, 0, { ...opts, maxN: n })], b.a, 16384, H * Rv);
    check(`dense attention over ${type} latent rows (${Lw} wide, values ${Rv}, n=${n})`, rel(dense, attentionRef(q, held, Vp, { T: 1, qPos0: n - 1, nHeads: H, nKv: 1, headDim: Lw, vDim: Rv, scale })), 1e-5);
  }
  check('kvHeadBytes agrees with the WGSL reader (q8_0 D 72, q4_0 D 40)', Math.abs(kvHeadBytes('q8_0', 72) - 102) + Math.abs(kvHeadBytes('q4_0', 40) - 36), 0);

  // --- models: GPU against WASM with the same cache type; snapshots across backends -----------------
  const fixtures: [string, 'q8_0' | 'q4_0'][] = [
    ['llama-llama3rope-bias', 'q8_0'], ['mistral-swa', 'q4_0'], ['gemma2-softcap-swa', 'q4_0'], ['gptoss-sinks', 'q8_0'],
    ['deepseekv3-mla', 'q4_0'], ['deepseekv32-dsa', 'q8_0'], ['qwen3next-hybrid', 'q8_0'],
  ];
  for (const [name, type] of fixtures) {
    const dir = join('test/fixtures/parity', name);
    const ref: FixtureReference = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
    const ids = ref.input_ids;
    const model = await loadFixtureModel(dir, ref, { maxChunk: 4, kvCache: type });
    const gm = gpuModel(model, gpu);
    const V = model.net.vocabSize;
    const w = model.newSession();
    const want = w.forward(ids, true);
    w.dispose();
    const g = gm.newSession();
    const all = await g.forward(ids, true);
    g.dispose();
    check(`${name} (${type}): GPU prefill logits vs WASM, every position (max rel)`, rel(all, want), 1e-4);
    const gd = gm.newSession();
    const dec = new Float32Array(ids.length * V);
    for (let t = 0; t < ids.length; t++) dec.set(await gd.forward([ids[t]]), t * V);
    gd.dispose();
    check(`${name} (${type}): GPU token-by-token logits vs WASM prefill (max rel)`, rel(dec, want), 1e-4);

    const n = Math.min(ids.length - 1, 24);
    const ws = model.newSession();
    ws.forward(ids.slice(0, n));
    const wasmBytes = ws.snapshot();
    const next = ws.forward([ids[n]]);
    ws.dispose();
    const gs = gm.newSession();
    await gs.forward(ids.slice(0, n));
    const gpuBytes = await gs.snapshot();
    gs.dispose();
    const r1 = model.restore(gpuBytes);
    check(`${name} (${type}): GPU snapshot → WASM restore, next logits vs WASM (max rel)`, rel(r1.forward([ids[n]]), next), 1e-4);
    r1.dispose();
    const r2 = gm.restore(wasmBytes);
    check(`${name} (${type}): WASM snapshot → GPU restore, next logits vs WASM (max rel)`, rel(await r2.forward([ids[n]]), next), 1e-4);
    r2.dispose();
    // Where every region is a quantized cache, the software adapter writes WASM's bytes (f32 state
    // differs in the last bits of its sums, and so may what is quantized from it).
    if (gpu.software && model.layout.regions.every((r) => r.quant)) {
      ok(`${name} (${type}): GPU and WASM snapshots hold the same bytes`, gpuBytes.length === wasmBytes.length && gpuBytes.every((x, i) => x === wasmBytes[i]));
    } else ok(`${name} (${type}): GPU and WASM snapshots are the same size`, gpuBytes.length === wasmBytes.length);
    // A snapshot of the f32 cache of the same model.
    const f32 = await loadFixtureModel(dir, ref, { maxChunk: 4 });
    const fs = f32.newSession();
    fs.forward(ids.slice(0, 3));
    const f32Bytes = fs.snapshot();
    fs.dispose();
    let msg = '';
    try {
      gm.restore(f32Bytes);
    } catch (e) {
      msg = e instanceof SnapshotError ? e.message : `${(e as Error).name}: ${(e as Error).message}`;
    }
    ok(`${name} (${type}): GPU restore refuses an f32-cache snapshot, naming both types`, new RegExp(`snapshot's KV cache is f32, this model's is ${type}`).test(msg), msg);
    f32.dispose();
    model.dispose();
  }

  checks.print(gpu.adapterName);
});
