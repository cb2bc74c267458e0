import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { matmul, reserveMatmulScratch } from '../src/kernels/matmul';
import { attachPool, createPool, poolOf, type Pool } from '../src/kernels/pool';
import { f32ToF16Ref } from '../src/kernels/reference';
import { instantiate, KernelError, type WasmInstance } from '../src/kernels/runtime';
import type { Weight, WeightDType } from '../src/kernels/types';
import { kernels, poison, randn, rng } from './helpers';

// Pooled and single-thread products must agree bit for bit: every output row is computed by the
// same kernel code whichever thread takes it.

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function weightBytes(k: WasmInstance, dtype: WeightDType, rows: number, cols: number, r: () => number): Weight {
  const f = randn(rows * cols, r);
  const n = rows * cols;
  let ptr: number;
  if (dtype === 'f32') ptr = k.arena.putF32(f).ptr;
  else if (dtype === 'f16' || dtype === 'bf16') {
    const h = new Uint16Array(n);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < n; i++) h[i] = dtype === 'f16' ? f32ToF16Ref(f[i]) : u[i] >>> 16;
    ptr = k.arena.put(new Uint8Array(h.buffer));
  } else {
    const src = k.arena.putF32(f);
    ptr = k.arena.alloc((n / 32) * (dtype === 'q8_0' ? 34 : 18));
    k.exports[dtype === 'q8_0' ? 'quantizeRowsQ8_0' : 'quantizeRowsQ4_0'](ptr, src.ptr, rows, cols);
  }
  return { ptr, dtype, rows, cols };
}

describe('worker pool (threads build, Node worker_threads)', () => {
  let k: WasmInstance;
  let pool: Pool;
  beforeAll(async () => {
    k = await instantiate({ build: 'threads' });
    expect(k.memory.buffer).toBeInstanceOf(SharedArrayBuffer);
    pool = await createPool(k, 3, { minWork: 0 });
    reserveMatmulScratch(k, 64, 288);
  });
  afterAll(async () => {
    await pool?.destroy();
  });

  const CASES: [WeightDType, boolean, number[]][] = [
    ['f32', false, [1, 7, 257]], ['f16', false, [1, 7, 257]], ['bf16', false, [1, 7, 257]],
    ['q8_0', false, [32, 288]], ['q4_0', false, [32, 288]], ['q8_0', true, [32, 288]], ['q4_0', true, [32, 288]],
  ];
  it.each(CASES)('%s (exact %s) pooled == single-thread bit for bit', (dtype, exact, colsList) => {
    for (const rows of [1, 2, 33, 257, 1000]) for (const cols of colsList) for (const batch of [1, 3, 17, 64]) {
      const m = k.arena.mark();
      const r = rng(rows * 13 + cols * 7 + batch);
      const w = weightBytes(k, dtype, rows, cols, r);
      const X = k.arena.putF32(randn(batch * cols, r));
      const Y1 = k.arena.f32buf(batch * rows), Y2 = k.arena.f32buf(batch * rows);
      poison(Y1.v);
      poison(Y2.v);
      attachPool(k, null);
      matmul(k, Y1.ptr, X.ptr, w, batch, { exact });
      attachPool(k, pool);
      expect(poolOf(k)).toBe(pool);
      matmul(k, Y2.ptr, X.ptr, w, batch, { exact });
      attachPool(k, null);
      const a = Y1.v.slice(), b = Y2.v.slice();
      expect(a.every(Number.isFinite), `${dtype} ${rows}×${cols} batch ${batch}`).toBe(true);
      const ua = new Uint32Array(a.buffer), ub = new Uint32Array(b.buffer);
      let diff = 0;
      for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) diff++;
      expect(diff, `${dtype} ${rows}×${cols} batch ${batch}`).toBe(0);
      k.arena.release(m);
    }
  });

  it('workers take part: pool.run covers every row, some of them on workers', () => {
    const m = k.arena.mark();
    const rows = 4096, cols = 1024;
    const w = weightBytes(k, 'q8_0', rows, cols, rng(3));
    const X = k.arena.putF32(randn(cols, rng(4)));
    const Y1 = k.arena.f32buf(rows), Y2 = k.arena.f32buf(rows);
    matmul(k, Y1.ptr, X.ptr, w, 1, { exact: true });
    // A worker asleep on a loaded machine may miss one call entirely; it cannot miss all of them.
    const before = pool.workerChunks;
    for (let i = 0; i < 20 && pool.workerChunks === before; i++) {
      poison(Y2.v);
      pool.run('matmulQ8_0Exact', [Y2.ptr, X.ptr, w.ptr, 1, rows, cols], rows);
      expect(Array.from(Y2.v)).toEqual(Array.from(Y1.v));
    }
    expect(pool.workerChunks).toBeGreaterThan(before);
    k.arena.release(m);
  });

  it('reports errors and refuses misuse', async () => {
    expect(() => pool.run('noSuchKernel', [], 4)).toThrow(KernelError);
    await expect(createPool(await kernels('simd'), 2)).rejects.toThrow(/threads/);
    await expect(createPool(k, 0)).rejects.toThrow(/nThreads/);
    // An out-of-bounds access traps inside the wasm of whichever thread takes the chunk.
    const m = k.arena.mark();
    const T = k.arena.f32buf(64 * 64);
    expect(() => pool.run('matmulF32', [T.ptr, T.ptr, 2 ** 31, 1, 64, 64], 64)).toThrow();
    // The pool still works afterwards.
    const w = weightBytes(k, 'f32', 64, 32, rng(8));
    const X = k.arena.putF32(randn(32, rng(9)));
    const Y = k.arena.f32buf(64);
    poison(Y.v);
    pool.run('matmulF32', [Y.ptr, X.ptr, w.ptr, 1, 64, 32], 64);
    expect(Y.v.every(Number.isFinite)).toBe(true);
    k.arena.release(m);
  });

  it('destroy() stops the workers; the pool refuses work afterwards', async () => {
    const k2 = await instantiate({ build: 'threads' });
    const p = await createPool(k2, 2);
    attachPool(k2, p);
    await p.destroy();
    expect(poolOf(k2)).toBeUndefined();
    expect(() => p.run('matmulF32', [8, 8, 8, 1, 1, 1], 1)).toThrow(/destroyed/);
  });
});

/** The runtime binary if it starts, else null (the test then says so instead of passing silently). */
function runtimeBin(name: 'bun' | 'deno'): string | null {
  const bin = join(root, 'node_modules', '.bin', name);
  if (!existsSync(bin)) return null;
  const v = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 20_000 });
  return v.status === 0 ? bin : null;
}

describe.each([
  ['bun', [] as string[]],
  ['deno', ['run', '--unstable-sloppy-imports', '--allow-read', '--allow-env']],
] as const)('worker pool under %s', (name, args) => {
  const bin = runtimeBin(name);
  it.skipIf(!bin)(`pooled matmul equals single-thread on ${name} (test/pool-smoke.ts)`, () => {
    const r = spawnSync(bin!, [...args, join(root, 'test', 'pool-smoke.ts')], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr + r.stdout).toMatch(new RegExp(`POOL OK ${name} 970 elements`));
    expect(r.status).toBe(0);
  });
});
