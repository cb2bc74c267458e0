// The matrix product of a prefill pass alone, on WebGPU: every kernel that can run it (one
// invocation per output, the tiled exact kernel, the GEMM at several workgroup shapes) on the
// shapes of the synthetic 309M model of bench/webgpu.ts (1024 × 1024, 4096 × 1024, 1024 × 4096,
// 32000 × 1024) for a pass of T tokens, random weights, in one run. Each kernel is dispatched `reps`
// times in one submission; the figure is the best of `runs` submissions, in GFLOP/s (2·rows·cols·T
// per product) and µs per product, less an empty submission's time.
//   deno run -A --unstable-sloppy-imports bench/webgpu-matmul.ts [--dtype q8_0|q4_0|f32|q4_k] [--tokens 128] [--reps 50] [--runs 3]

import { acquireGpu } from '../src/webgpu/device';
import { BufferUsage } from '../src/webgpu/flags';
import { GpuKernels, TOKENS_BASE, type Dispatch, type GpuBufs } from '../src/webgpu/ops';
import { quantizeKQuant } from '../src/formats/kquants';
import { instantiate } from '../src/kernels/runtime';
import { quantizeRowsQ4_0, quantizeRowsQ8_0 } from '../src/kernels/matmul';
import { rowBytes } from '../src/kernels/types';
import type { GemmShape } from '../src/webgpu/kernels/gemm.wgsl';
import type { GpuWeightDType } from '../src/webgpu/kernels/matmul.wgsl';

const args: string[] = (globalThis as any).Deno?.args ?? (globalThis as any).process?.argv.slice(2) ?? [];
const opt = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const dt = opt('--dtype', 'q8_0') as GpuWeightDType;
const T = Number(opt('--tokens', '128')), reps = Number(opt('--reps', '50')), runs = Number(opt('--runs', '3'));
const shapes: [number, number][] = [[1024, 1024], [4096, 1024], [1024, 4096], [32000, 1024]];

const gpu = await acquireGpu();
const k = await instantiate({});
let seed = 7;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;

function weightBytes(rows: number, cols: number): Uint8Array {
  const W = Float32Array.from({ length: rows * cols }, rnd);
  if (dt === 'f32') return new Uint8Array(W.buffer);
  if (dt === 'q8_0' || dt === 'q4_0') {
    const src = k.arena.putF32(W).ptr, dst = k.arena.alloc(rows * rowBytes(dt, cols), 4);
    (dt === 'q8_0' ? quantizeRowsQ8_0 : quantizeRowsQ4_0)(k, dst, src, rows, cols);
    const out = k.arena.u8(dst, rows * rowBytes(dt, cols)).slice();
    return out;
  }
  return quantizeKQuant(dt, W, rows, cols);
}

const gemmShapes: GemmShape[] = [
  { bm: 64, bn: 32, tm: 4, tn: 4 }, { bm: 32, bn: 32, tm: 4, tn: 4 }, { bm: 64, bn: 16, tm: 4, tn: 2 },
  { bm: 32, bn: 32, tm: 2, tn: 2 }, { bm: 16, bn: 16, tm: 2, tn: 2 },
];
const variants: { name: string; K: GpuKernels }[] = [
  { name: 'one invocation per output', K: new GpuKernels(gpu, { tile: null, gemm: null }) },
  { name: 'tiled 4×8 (exact)', K: new GpuKernels(gpu, { tile: { rows: 4, tokens: 8 }, gemm: null }) },
  ...gemmShapes.map((g) => ({ name: `gemm ${g.bm}×${g.bn} by ${g.tm}×${g.tn}`, K: new GpuKernels(gpu, { gemm: g }) })),
];

const maxCols = Math.max(...shapes.map((s) => s[1])), maxRows = Math.max(...shapes.map((s) => s[0]));
const K0 = variants[0].K;
const bufs: GpuBufs = {
  a: K0.buffer((T * maxCols + T * maxRows) * 4),
  st: K0.buffer(16),
  c: K0.buffer(16),
  ids: K0.buffer((TOKENS_BASE + 8) * 4),
  step: K0.buffer(16, BufferUsage.UNIFORM | BufferUsage.COPY_DST),
};
gpu.device.queue.writeBuffer(bufs.a, 0, Float32Array.from({ length: T * maxCols }, rnd));

console.log(`${gpu.adapterName}; ${dt}, a pass of ${T} tokens; best of ${runs} submissions of ${reps} products; GFLOP/s (µs per product)`);
console.log(`| kernel | ${shapes.map(([r, c]) => `${r}×${c}`).join(' | ')} |\n|---|${shapes.map(() => '---:').join('|')}|`);
const weights = shapes.map(([r, c]) => weightBytes(r, c));
// A submission's own cost (encode, submit, read back one float), subtracted from each figure.
let empty = Infinity;
for (let r = 0; r < runs; r++) {
  const t = performance.now();
  await K0.run([], { src: bufs.a, off: 0, n: 1 });
  empty = Math.min(empty, performance.now() - t);
}
console.log(`empty submission: ${(empty * 1000).toFixed(0)} µs`);
for (const { name, K } of variants) {
  const cells: string[] = [];
  for (let s = 0; s < shapes.length; s++) {
    const [rows, cols] = shapes[s];
    const w = K.weight(weights[s], dt, rows, cols);
    const d: Dispatch = K.matmul(bufs, T * maxCols, 0, w, T, { perOutput: true });
    const list = Array(reps).fill(d);
    await K.run(list);
    let best = Infinity;
    for (let r = 0; r < runs; r++) {
      const t = performance.now();
      await K.run(list, { src: bufs.a, off: T * maxCols, n: 1 });
      best = Math.min(best, (performance.now() - t - empty) / reps);
    }
    w.buf.destroy();
    const flops = 2 * rows * cols * T;
    cells.push(`${(flops / best / 1e6).toFixed(0)} (${(best * 1000).toFixed(0)})`);
  }
  console.log(`| ${name} | ${cells.join(' | ')} |`);
}
