// WebGPU checks of the ternary (BitNet b1.58) product: per-row int8 quantization and the packed
// ternary product against the naive reference and the WASM kernel, at odd sizes (columns not a
// multiple of 64, rows not of the workgroup), over poisoned outputs. Runs where WebGPU exists (Deno
// here: `deno run --allow-read --allow-env --unstable-sloppy-imports test/webgpu/checks-bitnet.ts`) and
// prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { instantiate } from '../../src/kernels/runtime';
import { packTernary, ternaryMatmul, ternaryScratchBytes } from '../../src/kernels/ternary';
import { ternaryMatmulRef } from '../../src/kernels/ternary.ref';
import { ternaryProduct, ternaryScratchFloats } from '../../src/webgpu/dispatch/ternary';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';

const { rnd, randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk, put, run } = gpuBench(gpu);
  const k = await instantiate({});
  for (const [rows, cols, batch] of [[37, 96, 1], [131, 200, 3], [1, 17, 2], [65, 64, 5], [9, 330, 7]]) {
    const t = Int8Array.from({ length: rows * cols }, () => Math.floor((rnd() + 1) * 1.5) - 1);
    const x = randn(batch * cols, 3);
    // A row with an exact tie after scaling (max |x| = 127, so s = 1) and a zero row.
    if (batch > 2) {
      x[cols] = 127;
      for (let c = 1; c < cols; c++) x[cols + c] = Math.round(rnd() * 20) + 0.5;
      x.fill(0, 2 * cols, 3 * cols);
    }
    const scale = Math.fround(0.3 + Math.abs(rnd()));
    const want = ternaryMatmulRef(x, t, scale, batch, rows, cols);
    const packed = packTernary(t, rows, cols);

    // WASM kernel (bit-exact with the reference).
    const m = k.arena.mark();
    const wp = k.arena.put(packed, 64), xp = k.arena.putF32(x).ptr, yp = k.arena.f32buf(batch * rows).ptr;
    ternaryMatmul(k, yp, xp, { ptr: wp, rows, cols, scale }, batch, k.arena.alloc(ternaryScratchBytes(batch, cols), 64));
    const wasm = k.arena.f32(yp, batch * rows).slice();
    k.arena.release(m);

    const b = mk(1 << 18, 16);
    const yOff = 8192, sOff = 16384;
    put(b.a, 0, x);
    const wbuf = K.upload(packed);
    const got = await run(ternaryProduct(K, b, yOff, 0, wbuf, { rows: batch, wRows: rows, cols, scale, scratch: sOff }), b.a, yOff, batch * rows);
    check(`ternary ${rows}x${cols} batch ${batch} vs reference`, rel(got, want), gpu.software ? 0 : 1e-6);
    check(`ternary ${rows}x${cols} batch ${batch} vs wasm`, rel(got, wasm), gpu.software ? 0 : 1e-6);
    const scratch = await run([], b.a, sOff, ternaryScratchFloats(batch, cols));
    check(`ternary ${rows}x${cols} batch ${batch} scratch written`, scratch.every(Number.isFinite) ? 0 : 1, 0);
  }
  checks.print(gpu.adapterName);
});
