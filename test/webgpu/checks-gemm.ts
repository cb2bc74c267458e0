// WebGPU checks of the GEMM of prefill passes with its columns split into ranges (partial sums in
// scratch, added in range order) against the WASM exact path: ranges that end inside a quantized
// block group, a last range shorter than the others, rows written yStride apart with the gaps and
// the rows past the batch still NaN afterwards. Prints one JSON line (see harness.ts).

import { GpuKernels } from '../../src/webgpu/ops';
import { gemmShapeName } from '../../src/webgpu/kernels/gemm.wgsl';
import { instantiate } from '../../src/kernels/runtime';
import { matmul, quantizeRowsQ4_0, quantizeRowsQ8_0 } from '../../src/kernels/matmul';
import { quantizeKQuant } from '../../src/formats/kquants';
import { rowBytes } from '../../src/kernels/types';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { mk: bufs, put, run } = gpuBench(gpu);
  const k = await instantiate({});
  const ACT = 1 << 20;
  const mk = () => bufs(ACT, 16);
  for (const [shape, dt, rows, cols, batch] of [
    [{ bm: 16, bn: 8, tm: 2, tn: 2 }, 'f32', 67, 419, 37], [{ bm: 16, bn: 8, tm: 2, tn: 2 }, 'q8_0', 45, 416, 21],
    [{ bm: 16, bn: 8, tm: 2, tn: 2 }, 'q4_0', 70, 32 * 9, 9], [{ bm: 16, bn: 8, tm: 2, tn: 2 }, 'q4_k', 33, 768, 12],
    [{ bm: 32, bn: 16, tm: 4, tn: 4, vec: true }, 'f32', 67, 419, 37], [{ bm: 64, bn: 32, tm: 8, tn: 4, vec: true }, 'q8_0', 131, 416, 45],
    [{ bm: 32, bn: 32, tm: 4, tn: 8, vec: true }, 'q4_k', 33, 768, 12],
  ] as const) {
    const splitK = new GpuKernels(gpu, { gemm: [shape], gemmSplit: 1 << 20 });
    const plan = splitK.gemmPlan(rows, cols, batch, true)!;
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
    const yStride = rows + 3, Y = 1 << 19, S = Y + (1 << 16);
    const b = mk();
    put(b.a, 0, X);
    const got = await run(splitK.product(b, Y, 0, splitK.weight(bytes, dt, rows, cols), batch, S, { yStride }), b.a, Y, (batch + 1) * yStride);
    const rowsGot = Float32Array.from({ length: batch * rows }, (_, i) => got[Math.floor(i / rows) * yStride + (i % rows)]);
    const untouched = got.every((v, i) => (i % yStride < rows && i < batch * yStride) || Number.isNaN(v));
    check(`gemm ${gemmShapeName(shape)} split into ${plan.splits} ranges of ${plan.kLen}, ${dt} ${rows}x${cols} batch ${batch} (gaps untouched: ${untouched})`, plan.splits > 1 && untouched ? rel(rowsGot, want) : Infinity, 1e-5);
  }

  checks.print(gpu.adapterName, { api: gpu.api });
});
