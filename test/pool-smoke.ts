// Run by test/kernels.pool.test.ts under Bun and Deno: a pooled matmul must equal the
// single-thread result bit for bit on that runtime. Prints one line "POOL OK <runtime> …".
import { attachPool, createPool } from '../src/kernels/pool';
import { matmul, reserveMatmulScratch } from '../src/kernels/matmul';
import { instantiate } from '../src/kernels/runtime';
import type { Weight } from '../src/kernels/types';

const k = await instantiate({ build: 'threads' });
const pool = await createPool(k, 3, { minWork: 0 });
const rows = 97, cols = 256, batch = 5;
let seed = 7;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296) * 2 - 1;
const wf = new Float32Array(rows * cols).map(rnd);
const W = k.arena.putF32(wf);
const Q = k.arena.alloc((rows * cols / 32) * 34);
k.exports.quantizeRowsQ8_0(Q, W.ptr, rows, cols);
const X = k.arena.putF32(new Float32Array(batch * cols).map(rnd));
const Y1 = k.arena.f32buf(batch * rows), Y2 = k.arena.f32buf(batch * rows);
reserveMatmulScratch(k, batch, cols);
const weights: Weight[] = [{ ptr: W.ptr, dtype: 'f32', rows, cols }, { ptr: Q, dtype: 'q8_0', rows, cols }];
let checked = 0;
for (const w of weights) {
  attachPool(k, null);
  Y1.v.fill(NaN);
  matmul(k, Y1.ptr, X.ptr, w, batch);
  attachPool(k, pool);
  Y2.v.fill(NaN);
  matmul(k, Y2.ptr, X.ptr, w, batch);
  const a = new Uint32Array(Y1.v.slice().buffer), b = new Uint32Array(Y2.v.slice().buffer);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] || !Number.isFinite(Y1.v[i])) throw new Error(`${w.dtype}: element ${i} differs: ${Y1.v[i]} vs ${Y2.v[i]}`);
  }
  checked += a.length;
}
await pool.destroy();
const g = globalThis as any;
console.log(`POOL OK ${g.Bun ? 'bun' : g.Deno ? 'deno' : 'node'} ${checked} elements`);
