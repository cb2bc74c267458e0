// WebGPU kernel checks against the WASM kernels (matmul `exact` path) and the naive TS references,
// on random data at odd sizes, and a tiny llama loaded with the q4_k_m mix (K-quant weights as their
// blocks on the GPU) against the WASM forward pass. Runs where WebGPU exists (Deno here: `deno run --allow-read
// --allow-env --unstable-sloppy-imports test/webgpu/checks-kernels.ts`) and prints one JSON line:
// { adapter, results: [{ name, err, tol, pass }] } or { error } when no device was acquired.

import { BufferUsage, MapMode } from '../../src/webgpu/flags';
import { EW, GpuKernels, TOKENS_BASE } from '../../src/webgpu/ops';
import { DEFAULT_GEMMS, type GemmShape } from '../../src/webgpu/kernels/gemm.wgsl';
import { decodeAttention } from '../../src/webgpu/dispatch/attention';
import { route } from '../../src/webgpu/dispatch/ffn';
import { instantiate } from '../../src/kernels/runtime';
import { matmul, quantizeRowsQ4_0, quantizeRowsQ8_0 } from '../../src/kernels/matmul';
import { dequantizeKQuant, KQUANT_LAYOUT, quantizeKQuant } from '../../src/formats/kquants';
import { openCheckpoint } from '../../src/formats/checkpoint';
import { writeSafetensors } from '../../src/formats/safetensors';
import { buildModel } from '../../src/models/index';
import { gpuModel } from '../../src/webgpu/model';
import { GPU_KQUANT_DTYPES } from '../../src/webgpu/kernels/kquant.wgsl';
import { rowBytes } from '../../src/kernels/types';
import { matmulRef } from '../../src/kernels/reference';
import { rmsNormRef, l2NormRef, layerNormRef } from '../../src/kernels/norm.ref';
import { ropeRef } from '../../src/kernels/rope.ref';
import { softmaxRef } from '../../src/kernels/act.ref';
import { attentionRef } from '../../src/kernels/attention.ref';
import { linearAttentionRef } from '../../src/kernels/linear_attention.ref';
import { conv1dRef } from '../../src/kernels/conv.ref';
import { routeRef } from '../../src/kernels/moe.ref';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { rnd, randn } = rng(12345);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, dev, mk: bufs, put, run, setStep } = gpuBench(gpu);
  // The kernels that sum as the one of a workgroup per output write the same f32 products and sums
  // in the same order: identical on llvmpipe; a hardware driver may contract a multiply and an add
  // into one fused operation in one kernel and not in another (up to ~1e-6 relative on an H100).
  const SAME = gpu.software ? 0 : 2e-6;
  const k = await instantiate({});

  // One activation buffer and one state buffer per check (NaN until written), filled from host arrays.
  const ACT = 1 << 20;
  const mk = (cData?: Float32Array) => bufs(ACT, ACT, cData);

  // --- matmul: f32, Q8_0, Q4_0 against the WASM exact path; batch 3, odd row counts --------------
  for (const dt of ['f32', 'q8_0', 'q4_0'] as const) {
    for (const [rows, cols, batch] of [[37, 96, 1], [131, 320, 3], [1, 64, 2]]) {
      const W = randn(rows * cols, 0.5), X = randn(batch * cols);
      const xp = k.arena.putF32(X).ptr, yp = k.arena.f32buf(batch * rows).ptr;
      let wptr: number;
      if (dt === 'f32') wptr = k.arena.putF32(W).ptr;
      else {
        const src = k.arena.putF32(W).ptr;
        wptr = k.arena.alloc(rows * rowBytes(dt, cols), 4);
        (dt === 'q8_0' ? quantizeRowsQ8_0 : quantizeRowsQ4_0)(k, wptr, src, rows, cols);
      }
      const w = { ptr: wptr, dtype: dt, rows, cols };
      matmul(k, yp, xp, w, batch, { exact: true });
      const want = k.arena.f32(yp, batch * rows).slice();
      const bytes = k.arena.u8(wptr, rows * rowBytes(dt, cols)).slice();
      const b = mk();
      const gw = K.weight(bytes, dt, rows, cols);
      put(b.a, 0, X);
      const got = await run([K.matmul(b, 8192, 0, gw, batch)], b.a, 8192, batch * rows);
      check(`matmul ${dt} ${rows}x${cols} batch ${batch}`, rel(got, want), 1e-5);

      // embedding row lookup through the same weight
      const e = mk();
      const row = rows - 1;
      const g2 = await run([K.embed(e, 0, gw, { row, scale: 0.5 })], e.a, 0, cols);
      const { dequantRow } = k.exports as any;
      const dq = k.arena.f32buf(cols).ptr;
      dequantRow(dq, wptr + row * rowBytes(dt, cols), { f32: 0, q8_0: 3, q4_0: 4 }[dt], cols, 0.5);
      check(`embed ${dt} row ${row} of ${rows}x${cols}`, rel(g2, k.arena.f32(dq, cols)), 1e-6);
    }
  }

  // matmul with routed expert ids (stack of 5 experts, 3 slots)
  {
    const E = 5, rows = 19, cols = 64, slots = 3;
    const Ws = Array.from({ length: E }, () => randn(rows * cols));
    const X = randn(cols);
    const stack = new Uint8Array(E * rows * rowBytes('q8_0', cols));
    const wps: number[] = [];
    for (let e = 0; e < E; e++) {
      const src = k.arena.putF32(Ws[e]).ptr, dst = k.arena.alloc(rows * rowBytes('q8_0', cols), 4);
      quantizeRowsQ8_0(k, dst, src, rows, cols);
      stack.set(k.arena.u8(dst, rows * rowBytes('q8_0', cols)), e * rows * rowBytes('q8_0', cols));
      wps.push(dst);
    }
    const sel = [4, 0, 2];
    const xp = k.arena.putF32(X).ptr, yp = k.arena.f32buf(rows).ptr;
    const want = new Float32Array(slots * rows);
    sel.forEach((e, j) => {
      matmul(k, yp, xp, { ptr: wps[e], dtype: 'q8_0', rows, cols }, 1, { exact: true });
      want.set(k.arena.f32(yp, rows), j * rows);
    });
    const b = mk();
    put(b.a, 0, X);
    dev.queue.writeBuffer(b.ids, 0, new Uint32Array(sel));
    const gw = K.weight(stack, 'q8_0', rows, cols, E);
    const got = await run([K.matmul(b, 1024, 0, gw, slots, { idsOff: 0, xStride: 0 })], b.a, 1024, slots * rows);
    check('matmul q8_0 routed experts', rel(got, want), 1e-5);

    // Two tokens of three slots each (x row = slot / 3), both matmul kernels.
    const sel2 = [4, 0, 2, 1, 3, 3], X2 = randn(2 * cols);
    const want2 = new Float32Array(sel2.length * rows);
    sel2.forEach((e, j) => {
      const xp2 = k.arena.putF32(X2.subarray(Math.floor(j / 3) * cols, (Math.floor(j / 3) + 1) * cols)).ptr;
      matmul(k, yp, xp2, { ptr: wps[e], dtype: 'q8_0', rows, cols }, 1, { exact: true });
      want2.set(k.arena.f32(yp, rows), j * rows);
    });
    put(b.a, 0, X2);
    dev.queue.writeBuffer(b.ids, 0, new Uint32Array(sel2));
    for (const perOutput of [false, true]) {
      const got2 = await run([K.matmul(b, 4096, 0, gw, sel2.length, { idsOff: 0, xStride: cols, xDiv: 3, perOutput })], b.a, 4096, sel2.length * rows);
      check(`matmul q8_0 routed experts, 2 tokens × 3 slots${perOutput ? ', one invocation per output' : ''}`, rel(got2, want2), 1e-5);
    }
  }

  // The kernel of one invocation per output (passes of many tokens) sums as the one of a workgroup
  // per output: identical outputs, over more z than a workgroup, more units than invocations, f32
  // rows of a length that is no multiple of 4.
  for (const [dt, rows, cols, batch] of [['f32', 33, 70, 70], ['f32', 9, 301, 5], ['q8_0', 21, 640, 67], ['q4_0', 17, 1280, 3]] as const) {
    const W = randn(rows * cols, 0.5), X = randn(batch * cols);
    let bytes: Uint8Array;
    if (dt === 'f32') bytes = new Uint8Array(W.buffer.slice(0));
    else {
      const src = k.arena.putF32(W).ptr, dst = k.arena.alloc(rows * rowBytes(dt, cols), 4);
      (dt === 'q8_0' ? quantizeRowsQ8_0 : quantizeRowsQ4_0)(k, dst, src, rows, cols);
      bytes = k.arena.u8(dst, rows * rowBytes(dt, cols)).slice();
    }
    const b = mk(), gw = K.weight(bytes, dt, rows, cols), Y = 1 << 19;
    put(b.a, 0, X);
    const one = await run([K.matmul(b, Y, 0, gw, batch)], b.a, Y, batch * rows);
    const each = await run([K.matmul(b, Y, 0, gw, batch, { perOutput: true })], b.a, Y, batch * rows);
    check(`matmul ${dt} ${rows}x${cols} batch ${batch}: ${K.tile ? `tiled ${K.tile.rows}×${K.tile.tokens}` : 'one invocation per output'} (this adapter's default) = a workgroup per output`, rel(each, one), SAME);
    for (const tile of [null, { rows: 1, tokens: 1 }, { rows: 3, tokens: 5 }, { rows: 4, tokens: 8 }, { rows: 8, tokens: 4 }]) {
      const Kt = new GpuKernels(gpu, { tile });
      const got = await run([Kt.matmul(b, Y, 0, Kt.weight(bytes, dt, rows, cols), batch, { perOutput: true })], b.a, Y, batch * rows);
      check(`matmul ${dt} ${rows}x${cols} batch ${batch}: ${tile ? `tiled ${tile.rows}×${tile.tokens}` : 'one invocation per output'} = a workgroup per output`, rel(got, one), SAME);
    }
    if (dt === 'f32') {
      const want = matmulRef(X, W, batch, rows, cols);
      check(`matmul f32 ${rows}x${cols} batch ${batch} (a row length no multiple of 4) against float64`, rel(each, want), 1e-5);
    }
  }

  // --- K-quant weights (q4_k … q2_k, iq4_nl, iq4_xs, mxfp4, q4_1, q5_0, q5_1) as their blocks, from
  // the reference quantizers: against the WASM exact path (f32 activations × dequantized weights), the
  // kernel of one invocation per output and the tiled kernel identical to the one of a workgroup per
  // output, rows from rowOff, embedding rows equal to the dequantizer, routed experts of a stack (odd
  // rows: q3_k / q6_k rows and experts start at offsets that are not 4-aligned; the 32-element formats
  // also take rows of 9 blocks, whose q5_0 / iq4_nl / mxfp4 rows start at offsets that are not 4-aligned).
  const tiles = [null, { rows: 3, tokens: 5 }, { rows: 4, tokens: 8 }].map((tile) => ({ tile, Kt: new GpuKernels(gpu, { tile }) }));
  for (const dt of GPU_KQUANT_DTYPES) {
    const shapes = [[37, 256, 1], [13, 1280, 3], [9, 512, 67], ...(KQUANT_LAYOUT[dt].block === 32 ? [[11, 288, 3]] : [])];
    for (const [rows, cols, batch] of shapes) {
      const W = randn(rows * cols, 0.5), X = randn(batch * cols);
      const bytes = quantizeKQuant(dt, W, rows, cols);
      const wptr = k.arena.alloc(bytes.length, 4);
      k.arena.u8(wptr, bytes.length).set(bytes);
      const xp = k.arena.putF32(X).ptr, yp = k.arena.f32buf(batch * rows).ptr;
      matmul(k, yp, xp, { ptr: wptr, dtype: dt, rows, cols }, batch, { exact: true });
      const want = k.arena.f32(yp, batch * rows).slice();
      const b = mk(), gw = K.weight(bytes, dt, rows, cols), Y = 1 << 19;
      put(b.a, 0, X);
      const one = await run([K.matmul(b, Y, 0, gw, batch)], b.a, Y, batch * rows);
      check(`matmul ${dt} ${rows}x${cols} batch ${batch}`, rel(one, want), 1e-5);
      const each = await run([K.matmul(b, Y, 0, gw, batch, { perOutput: true })], b.a, Y, batch * rows);
      check(`matmul ${dt} ${rows}x${cols} batch ${batch}: ${K.tile ? `tiled ${K.tile.rows}×${K.tile.tokens}` : 'one invocation per output'} (this adapter's default) = a workgroup per output`, rel(each, one), SAME);
      if (batch > 1) {
        for (const { tile, Kt } of tiles) {
          const got = await run([Kt.matmul(b, Y, 0, Kt.weight(bytes, dt, rows, cols), batch, { perOutput: true })], b.a, Y, batch * rows);
          check(`matmul ${dt} ${rows}x${cols} batch ${batch}: ${tile ? `tiled ${tile.rows}×${tile.tokens}` : 'one invocation per output'} = a workgroup per output`, rel(got, one), SAME);
        }
      }
      const part = await run([K.matmul(b, Y, 0, gw, batch, { rows: 3, rowOff: 5, yStride: 3 })], b.a, Y, batch * 3);
      const wantPart = Float32Array.from({ length: batch * 3 }, (_, i) => want[Math.floor(i / 3) * rows + 5 + (i % 3)]);
      check(`matmul ${dt} ${rows}x${cols} batch ${batch}: rows 5…7 (rowOff)`, rel(part, wantPart), 1e-5);
      const e = mk(), row = rows - 2, rb = rowBytes(dt, cols);
      const g2 = await run([K.embed(e, 0, gw, { row, scale: 0.5 })], e.a, 0, cols);
      const dq = dequantizeKQuant(dt, bytes.subarray(row * rb, (row + 1) * rb), cols).map((v) => v * 0.5);
      check(`embed ${dt} row ${row} of ${rows}x${cols}`, rel(g2, dq), 1e-6);
    }
    // A stack of 3 experts of 7 × 256, 2 tokens × 2 slots, both kernels that take ids.
    const E = 3, rows = 7, cols = 256, rb = rowBytes(dt, cols), sel = [2, 0, 1, 2], X = randn(2 * cols);
    const stack = quantizeKQuant(dt, randn(E * rows * cols, 0.5), E * rows, cols);
    const wptr = k.arena.alloc(stack.length, 4);
    k.arena.u8(wptr, stack.length).set(stack);
    const yp = k.arena.f32buf(rows).ptr, want = new Float32Array(sel.length * rows);
    sel.forEach((ex, j) => {
      const xp = k.arena.putF32(X.subarray((j >> 1) * cols, ((j >> 1) + 1) * cols)).ptr;
      matmul(k, yp, xp, { ptr: wptr + ex * rows * rb, dtype: dt, rows, cols }, 1, { exact: true });
      want.set(k.arena.f32(yp, rows), j * rows);
    });
    const b = mk(), gw = K.weight(stack, dt, rows, cols, E);
    put(b.a, 0, X);
    dev.queue.writeBuffer(b.ids, 0, new Uint32Array(sel));
    for (const perOutput of [false, true]) {
      const got = await run([K.matmul(b, 4096, 0, gw, sel.length, { idsOff: 0, xStride: cols, xDiv: 2, perOutput })], b.a, 4096, sel.length * rows);
      check(`matmul ${dt} routed experts, 2 tokens × 2 slots${perOutput ? ', one invocation per output' : ''}`, rel(got, want), 1e-5);
    }
  }

  // --- The tiled GEMM of prefill passes (on by default on hardware adapters only): against the WASM
  // exact path (f32 sums, so equal up to rounding) at odd row and token counts that leave partial
  // workgroups, rows written yStride apart with the gaps and the rows past the batch still NaN
  // afterwards, for every weight type and three workgroup shapes.
  // On software adapters (llvmpipe) the GEMM shaders of q2_k, q4_1, q5_0 and q5_1 take 0.5–2 minutes
  // each to compile; those run where the adapter is hardware.
  const slowOnSoftware = ['q2_k', 'q4_1', 'q5_0', 'q5_1'];
  const gemmShapes: GemmShape[] = [{ bm: 64, bn: 32, tm: 4, tn: 4 }, { bm: 32, bn: 32, tm: 4, tn: 4 }, { bm: 16, bn: 8, tm: 2, tn: 2 }, { bm: 32, bn: 16, tm: 4, tn: 4, vec: true }, ...(gpu.software ? [] : DEFAULT_GEMMS)];
  const gemms = gemmShapes.map((gemm) => ({ gemm, Kg: new GpuKernels(gpu, { gemm }) }));
  for (const dt of (['f32', 'q8_0', 'q4_0', ...GPU_KQUANT_DTYPES] as const).filter((d) => !(gpu.software && slowOnSoftware.includes(d)))) {
    const block = dt === 'f32' ? 1 : dt === 'q8_0' || dt === 'q4_0' ? 32 : KQUANT_LAYOUT[dt].block;
    const shapes = dt === 'f32' ? [[67, 301, 37], [130, 64, 5]] : [[67, block * Math.max(1, Math.ceil(96 / block)), 37], [29, block * 2, 70]];
    for (const [rows, cols, batch] of shapes) {
      const W = randn(rows * cols, 0.5), X = randn(batch * cols);
      let bytes: Uint8Array;
      const src = k.arena.putF32(W).ptr;
      if (dt === 'f32') bytes = new Uint8Array(W.buffer.slice(0));
      else if (dt === 'q8_0' || dt === 'q4_0') {
        const dst = k.arena.alloc(rows * rowBytes(dt, cols), 4);
        (dt === 'q8_0' ? quantizeRowsQ8_0 : quantizeRowsQ4_0)(k, dst, src, rows, cols);
        bytes = k.arena.u8(dst, rows * rowBytes(dt, cols)).slice();
      } else bytes = quantizeKQuant(dt, W, rows, cols);
      const wptr = k.arena.alloc(bytes.length, 4);
      k.arena.u8(wptr, bytes.length).set(bytes);
      const xp = k.arena.putF32(X).ptr, yp = k.arena.f32buf(batch * rows).ptr;
      matmul(k, yp, xp, { ptr: wptr, dtype: dt, rows, cols }, batch, { exact: true });
      const want = k.arena.f32(yp, batch * rows).slice();
      const yStride = rows + 3, Y = 1 << 19;
      for (const { gemm, Kg } of gemms) {
        const b = mk();
        put(b.a, 0, X);
        const got = await run([Kg.matmul(b, Y, 0, Kg.weight(bytes, dt, rows, cols), batch, { perOutput: true, yStride })], b.a, Y, (batch + 1) * yStride);
        const rowsGot = Float32Array.from({ length: batch * rows }, (_, i) => got[Math.floor(i / rows) * yStride + (i % rows)]);
        const untouched = got.every((v, i) => (i % yStride < rows && i < batch * yStride) || Number.isNaN(v));
        check(`gemm ${gemm.vec ? 'vector ' : ''}${gemm.bm}x${gemm.bn} by ${gemm.tm}x${gemm.tn}, ${dt} ${rows}x${cols} batch ${batch} (gaps untouched: ${untouched})`, untouched ? rel(rowsGot, want) : Infinity, 1e-5);
      }
    }
  }

  // --- RMSNorm (plain, zero-centred, gated) and L2 norm ------------------------------------------
  for (const [rows, dim] of [[3, 67], [5, 256]]) {
    const X = randn(rows * dim), Wt = randn(dim, 0.3), Z = randn(rows * dim);
    for (const addOne of [false, true]) {
      const b = mk(Wt);
      put(b.a, 0, X);
      const got = await run([K.rmsNorm(b, 4096, 0, 0, rows, dim, 1e-6, { addOne })], b.a, 4096, rows * dim);
      check(`rmsNorm ${rows}x${dim}${addOne ? ' (1+w)' : ''}`, rel(got, rmsNormRef(X, Wt, rows, dim, 1e-6, addOne)), 1e-5);
    }
    const b = mk(Wt);
    put(b.a, 0, X);
    put(b.a, 8192, Z);
    const got = await run([K.rmsNorm(b, 0, 0, 0, rows, dim, 1e-6, { gateZ: 8192 })], b.a, 0, rows * dim);
    const r = rmsNormRef(X, Wt, rows, dim, 1e-6);
    const want = r.map((v, i) => v * (Z[i] / (1 + Math.exp(-Z[i]))));
    check(`rmsNorm gated ${rows}x${dim}`, rel(got, want), 1e-5);
    const b2 = mk();
    put(b2.a, 0, X);
    const g2 = await run([K.l2Norm(b2, 0, 0, rows, dim, 1e-6)], b2.a, 0, rows * dim);
    check(`l2Norm ${rows}x${dim}`, rel(g2, l2NormRef(X, rows, dim, 1e-6)), 1e-5);
  }

  // --- RoPE (neox partial, interleaved full) at positions 1000 … 1002 ---------------------------------
  for (const [style, headDim, rotaryDim] of [['neox', 64, 16], ['interleaved', 32, 32]] as const) {
    const T = 3, H = 5, pos0 = 1000, maxPos = 1100, half = rotaryDim / 2;
    const invFreq = Float32Array.from({ length: half }, (_, i) => 1 / 10000 ** ((2 * i) / rotaryDim));
    const cos = new Float32Array(maxPos * half), sin = new Float32Array(maxPos * half);
    for (let p = 0; p < maxPos; p++) for (let i = 0; i < half; i++) {
      const ang = Math.fround(p * invFreq[i]);
      cos[p * half + i] = Math.cos(ang);
      sin[p * half + i] = Math.sin(ang);
    }
    const cData = new Float32Array(2 * maxPos * half);
    cData.set(cos);
    cData.set(sin, maxPos * half);
    const X = randn(T * H * headDim);
    const b = mk(cData);
    put(b.a, 0, X);
    setStep(b, pos0);
    const got = await run([K.rope(b, 0, T, H, headDim, rotaryDim, style, 0, maxPos * half)], b.a, 0, X.length);
    const want = ropeRef(X, T, H, headDim, [pos0, pos0 + 1, pos0 + 2], invFreq, rotaryDim, style);
    check(`rope ${style} ${headDim}/${rotaryDim}`, rel(got, want), 1e-5);
  }

  // --- softmax ------------------------------------------------------------------------------------
  {
    const rows = 7, n = 1001, X = randn(rows * n, 8);
    const b = mk();
    put(b.a, 0, X);
    const got = await run([K.softmax(b, 0, rows, n)], b.a, 0, rows * n);
    check(`softmax ${rows}x${n}`, rel(got, softmaxRef(X, rows, n)), 1e-5);
  }

  // --- decode attention (GQA 6 heads over 2 KV heads, 45 cached positions) ------------------------
  {
    const nHeads = 6, nKv = 2, D = 40, Dv = 24, n = 45, scale = 1 / Math.sqrt(D);
    const q = randn(nHeads * D), Kc = randn(n * nKv * D), Vc = randn(n * nKv * Dv);
    const b = mk();
    put(b.a, 0, q);
    put(b.st, 0, Kc);
    put(b.st, 65536, Vc);
    setStep(b, n - 1);
    const got = await run([decodeAttention(K, b, 1024, 0, 0, 65536, { nHeads, nKv, headDim: D, vDim: Dv, scale, scores: 8192, maxN: 64 })], b.a, 1024, nHeads * Dv);
    const want = attentionRef(q, Kc, Vc, { T: 1, qPos0: n - 1, nHeads, nKv, headDim: D, vDim: Dv, scale });
    check(`attention GQA ${nHeads}/${nKv} n=${n}`, rel(got, want), 1e-5);
  }

  // --- gated delta rule: 3 steps, Hv 6 over Hk 3, dk 24, dv 40 --------------------------------------
  {
    const Hv = 6, Hk = 3, dk = 24, dv = 40, steps = 3, scale = 1 / Math.sqrt(dk);
    const S0 = randn(Hv * dk * dv, 0.2);
    const b = mk();
    put(b.st, 0, S0);
    let S: Float64Array<ArrayBufferLike> = Float64Array.from(S0);
    let worst = 0;
    for (let t = 0; t < steps; t++) {
      const q = randn(Hk * dk), kk = randn(Hk * dk), v = randn(Hv * dv);
      const g = Float32Array.from({ length: Hv }, () => -Math.abs(rnd())), beta = Float32Array.from({ length: Hv }, () => (rnd() + 1) / 2);
      put(b.a, 0, q);
      put(b.a, 1024, kk);
      put(b.a, 2048, v);
      put(b.a, 3072, g);
      put(b.a, 3200, beta);
      const got = await run([K.deltaStep(b, 4096, 0, 0, 1024, 2048, 3072, 3200, { Hv, Hk, dk, dv, scale, normQK: true })], b.a, 4096, Hv * dv);
      // Reference: L2-normalised q, k repeated to value heads.
      const qn = l2NormRef(q, Hk, dk, 1e-6), kn = l2NormRef(kk, Hk, dk, 1e-6);
      const qr = new Float64Array(Hv * dk), kr = new Float64Array(Hv * dk);
      for (let h = 0; h < Hv; h++) {
        const kh = Math.floor(h / (Hv / Hk));
        qr.set(qn.subarray(kh * dk, (kh + 1) * dk), h * dk);
        kr.set(kn.subarray(kh * dk, (kh + 1) * dk), h * dk);
      }
      const r = linearAttentionRef(qr, kr, v, S, { T: 1, H: Hv, dk, dv, decay: 'scalar', g, beta, scale });
      S = r.S;
      worst = Math.max(worst, rel(got, r.o));
    }
    const gotS = await run([], b.st, 0, Hv * dk * dv);
    check(`deltaStep output (${steps} steps)`, worst, 1e-5);
    check(`deltaStep state (${steps} steps)`, rel(gotS, S), 1e-5);

    // gates
    const H = 7, ba = randn(2 * H, 4), aLog = randn(H), dt = randn(H);
    const cData = new Float32Array(2 * H);
    cData.set(aLog);
    cData.set(dt, H);
    const b2 = mk(cData);
    put(b2.a, 0, ba);
    const gg = await run([K.deltaGates(b2, 64, 128, 0, 0, H, H)], b2.a, 64, 64 + H);
    const want = new Float64Array(64 + H);
    for (let h = 0; h < H; h++) {
      const x = ba[H + h] + dt[h];
      want[h] = -Math.exp(aLog[h]) * (x > 20 ? x : Math.log1p(Math.exp(x)));
      want[64 + h] = 1 / (1 + Math.exp(-ba[h]));
    }
    const gsel = Float64Array.from([...gg.subarray(0, H), ...new Float32Array(64 - H), ...gg.subarray(64, 64 + H)]);
    check('deltaGates', rel(gsel, want), 1e-5);
  }

  // --- conv1d (silu) over 3 tokens with incoming state -------------------------------------------------
  {
    const T = 3, C = 77, W = 4;
    const X = randn(T * C), Wt = randn(C * W), S0 = randn(C * (W - 1));
    const b = mk(Wt);
    put(b.a, 0, X);
    put(b.st, 0, S0);
    const got = await run([K.conv1d(b, 0, 0, 0, T, C, W, 'silu')], b.a, 0, T * C);
    const gs = await run([], b.st, 0, C * (W - 1));
    const r = conv1dRef(X, Wt, null, S0, T, C, W, 'silu');
    check('conv1d silu', rel(got, r.y), 1e-5);
    check('conv1d state', rel(gs, r.state), 1e-6);
  }

  // --- MoE routing (softmax → top-k → renormalise) and combine ------------------------------------
  {
    const T = 3, E = 13, Kk = 4, L = randn(T * E, 3);
    for (const renorm of [true, false]) {
      const b = mk();
      put(b.a, 0, L);
      const gw = await run([route(K, b, 0, 512, 0, T, E, Kk, { mode: 'softmax_topk', renormalize: renorm })], b.a, 512, T * Kk);
      const enc = dev.createCommandEncoder();
      const rd = dev.createBuffer({ size: 64, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
      enc.copyBufferToBuffer(b.ids, 0, rd, 0, 64);
      dev.queue.submit([enc.finish()]);
      await rd.mapAsync(MapMode.READ);
      const gi = Array.from(new Uint32Array(rd.getMappedRange().slice(0, T * Kk * 4)));
      const r = routeRef(L, T, E, Kk, { mode: 'softmax_topk', renormalize: renorm });
      const idsOk = gi.every((v, i) => v === r.ids[Math.floor(i / Kk)][i % Kk]);
      check(`route softmax_topk ids${renorm ? ' (renorm)' : ''}`, idsOk ? 0 : 1, 0);
      check(`route softmax_topk weights${renorm ? ' (renorm)' : ''}`, rel(gw, r.w.flat()), 1e-5);
    }
    const D = 50, Y = randn(Kk * D), Wt = randn(Kk), Sh = randn(D), sg = randn(1);
    const b = mk();
    put(b.a, 0, Y);
    put(b.a, 1024, Wt);
    put(b.a, 2048, Sh);
    put(b.a, 3072, sg);
    const got = await run([K.moeCombine(b, 4096, 0, 1024, D, Kk, { y: 2048, gate: 3072 })], b.a, 4096, D);
    const want = new Float64Array(D);
    const gs = 1 / (1 + Math.exp(-sg[0]));
    for (let d = 0; d < D; d++) {
      for (let j = 0; j < Kk; j++) want[d] += Wt[j] * Y[j * D + d];
      want[d] += gs * Sh[d];
    }
    check('moeCombine with gated shared expert', rel(got, want), 1e-5);
  }

  // --- elementwise and copy -----------------------------------------------------------------------
  {
    const n = 1234, X = randn(n), B = randn(n);
    const refs: Record<string, (x: number, b: number) => number> = {
      add: (x, b) => x + b, mul: (x, b) => x * b, swiglu: (x, b) => (x / (1 + Math.exp(-x))) * b,
      mulSigmoid: (x, b) => x / (1 + Math.exp(-b)), silu: (x) => x / (1 + Math.exp(-x)), sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    };
    for (const [name, f] of Object.entries(refs)) {
      const b = mk();
      put(b.a, 0, X);
      put(b.a, 2048, B);
      const got = await run([K.elementwise(b, (EW as any)[name], 4096, 0, 2048, n)], b.a, 4096, n);
      check(`elementwise ${name}`, rel(got, Array.from(X, (x, i) => f(x, B[i]))), 1e-6);
    }
    const b = mk();
    put(b.a, 0, X);
    put(b.st, 160, new Float32Array(12)); // the gaps between the strided rows read back as 0
    setStep(b, 3);
    await run([K.copy(b, 100, 0, 2, 5, { srcStride: 10, dstStride: 7, posStride: 20, toState: true })], b.a, 0, 1);
    const got = await run([], b.st, 160, 12);
    const want = [X[0], X[1], X[2], X[3], X[4], 0, 0, X[10], X[11], X[12], X[13], X[14]];
    check('copy strided into state at step.pos', rel(got, want), 0);
  }

  // --- LayerNorm (weight + bias, weight only), constant-vector and scalar elementwise ops, argmax ---
  for (const [rows, dim] of [[3, 37], [2, 200]]) {
    const X = randn(rows * dim, 2), W = randn(dim), Bv = randn(dim);
    for (const withB of [true, false]) {
      const cData = new Float32Array(2 * dim + 8);
      cData.set(W, 0);
      cData.set(Bv, dim + 4);
      const b = mk(cData);
      put(b.a, 0, X);
      const got = await run([K.layerNorm(b, 4096, 0, 0, withB ? dim + 4 : -1, rows, dim, 1e-5)], b.a, 4096, rows * dim);
      check(`layerNorm ${rows}x${dim}${withB ? ' + bias' : ''}`, rel(got, layerNormRef(X, W, withB ? Bv : null, rows, dim, 1e-5)), 1e-5);
    }
  }
  {
    const n = 301, period = 43, X = randn(n, 3), C = randn(period);
    const b = mk(C);
    put(b.a, 0, X);
    const cases: [string, number, (x: number, i: number) => number, { period?: number; s?: number }][] = [
      ['scale', EW.scale, (x) => Math.fround(x * Math.fround(0.37)), { s: 0.37 }],
      ['addConst (period 43)', EW.addConst, (x, i) => x + C[i % period], { period }],
      ['mulConst (period 43)', EW.mulConst, (x, i) => x * C[i % period], { period }],
      ['softcap 2.5', EW.softcap, (x) => 2.5 * Math.tanh(x / 2.5), { s: 2.5 }],
    ];
    for (const [name, op, f, o] of cases) {
      const got = await run([K.elementwise(b, op, 4096, 0, 0, n, o)], b.a, 4096, n);
      check(`elementwise ${name}`, rel(got, Array.from(X, f)), 2e-6);
    }
  }
  {
    // Ties go to the lowest id; NaN never wins; the choice lands at ids[TOKENS_BASE + pos + 1].
    const n = 1000, L = randn(n);
    L[17] = 9; L[640] = 9; L[3] = NaN; L[999] = 8.5;
    const b = mk();
    put(b.a, 0, L);
    setStep(b, 5);
    await K.run([K.argmax(b, 0, n)]);
    const got = await run([], b.ids, TOKENS_BASE + 6, 1);
    check('argmax (tie → lowest id, NaN skipped)', new Uint32Array(got.buffer)[0] === 17 ? 0 : 1, 0);
  }

  // --- a tiny llama (hidden 256, 2 layers) loaded with the q4_k_m mix (q4_k, q6_k weights and a q4_k
  // embedding table) and exact dot products: GPU logits against the WASM forward pass --------------
  {
    const H = 256, INTER = 512, HEADS = 4, KV = 2, HD = 64, VOCAB = 301, LAYERS = 2;
    const config = {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: H, intermediate_size: INTER,
      num_hidden_layers: LAYERS, num_attention_heads: HEADS, num_key_value_heads: KV, head_dim: HD,
      vocab_size: VOCAB, max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000,
      tie_word_embeddings: false, hidden_act: 'silu', eos_token_id: 2, torch_dtype: 'float32',
    };
    const ts: { name: string; shape: number[]; data: Float32Array }[] = [];
    const add = (name: string, shape: number[], s: number, m = 0) => ts.push({ name, shape, data: randn(shape[0] * (shape[1] ?? 1), s, m) });
    add('model.embed_tokens.weight', [VOCAB, H], 1);
    for (let i = 0; i < LAYERS; i++) {
      const p = `model.layers.${i}`;
      add(`${p}.input_layernorm.weight`, [H], 0.1, 1);
      add(`${p}.post_attention_layernorm.weight`, [H], 0.1, 1);
      add(`${p}.self_attn.q_proj.weight`, [HEADS * HD, H], 0.08);
      add(`${p}.self_attn.k_proj.weight`, [KV * HD, H], 0.08);
      add(`${p}.self_attn.v_proj.weight`, [KV * HD, H], 0.08);
      add(`${p}.self_attn.o_proj.weight`, [H, HEADS * HD], 0.06);
      add(`${p}.mlp.gate_proj.weight`, [INTER, H], 0.06);
      add(`${p}.mlp.up_proj.weight`, [INTER, H], 0.06);
      add(`${p}.mlp.down_proj.weight`, [H, INTER], 0.04);
    }
    add('model.norm.weight', [H], 0.1, 1);
    add('lm_head.weight', [VOCAB, H], 0.1);
    const st = writeSafetensors(ts.map((t) => ({ name: t.name, dtype: 'f32' as const, shape: t.shape, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) })));
    const model = await buildModel(await openCheckpoint({ files: { 'config.json': JSON.stringify(config), 'model.safetensors': st } }), { exact: true, maxContext: 64, dtype: 'q4_k_m' });
    const gm = gpuModel(model, gpu);
    const byType = model.info().bytesByDType;
    // Every matrix is q4_k or q6_k (the f32 norm weights go to the constants).
    check('q4_k_m llama: q4_k and q6_k matrices uploaded as their blocks', byType.q4_k && byType.q6_k ? Math.abs(gm.info().weightBytes - byType.q4_k - byType.q6_k) : 1, 0);
    const ids = [5, 17, 250, 3, 99, 300, 1];
    const want = model.newSession().forward(ids, true);
    const got = await gm.newSession().forward(ids, true);
    check('q4_k_m llama logits, GPU vs WASM exact (max rel)', rel(got, want), 1e-4);
  }

  checks.print(gpu.adapterName, { api: gpu.api });
});
