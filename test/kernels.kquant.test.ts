// K-quant matrix products (assembly/kquant.ts through matmul()): the integer path against the naive
// reference of src/kernels/kquant.ref.ts bit for bit, and against float64 products of the
// dequantized weights within the activation-quantization error; the exact path; embeddings;
// argument errors. Weights come both from the reference quantizers and from random bytes (every
// bit pattern of scales and quants, finite f16 scales).

import { beforeAll, describe, expect, it } from 'vitest';
import { f32ToF16, quantizeQ8_0 } from '../src/formats/dtype';
import { dequantizeKQuant, KQUANT_LAYOUT, quantizeKQuant, type KQuantDType } from '../src/formats/kquants';
import { quantizeActQ8K, reserveKMatmulScratch, type KWeight } from '../src/kernels/kquant';
import { kmatmulRef, quantizeActKRef } from '../src/kernels/kquant.ref';
import { embedRows, matmul } from '../src/kernels/matmul';
import { attachPool, createPool } from '../src/kernels/pool';
import { instantiate, KernelError, type WasmInstance } from '../src/kernels/runtime';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

const WEIGHT_DTYPES: KQuantDType[] = ['q4_k', 'q6_k', 'q5_k', 'iq4_nl', 'iq4_xs', 'mxfp4', 'q3_k', 'q2_k', 'q4_1', 'q5_0', 'q5_1'];
const ROWS = [1, 7, 33], BATCHES = [1, 3, 5];
const colsFor = (dt: KQuantDType) => (KQUANT_LAYOUT[dt].block === 32 ? [32, 96, 256, 288] : [256, 512, 1024]);

// Tolerances, per output element against float64 Σ_c W[r,c]·X[b,c] of the dequantized weights and
// the unquantized X (bounds scaled by Σ_c |W[r,c]·X[b,c]|, which does not vanish when the sum cancels):
// - integer path: each activation is off by at most half a step, amax/254 of its block (Q8_K: 256
//   values; Q8_0: 32 values, plus 127·2^−11 steps from d held in f16), so
//   |Y − ref| ≤ Σ_c |W[r,c]|·0.6·amax_block(c)/127 + 1e-5·Σ_c |W[r,c]·X[b,c]|;
// - exact path: f32 rounding only, |Y − ref| ≤ 1e-5·Σ_c |W[r,c]·X[b,c]|.
const EXACT_TOL = 1e-5;

/** The largest |Y − ref| / bound over all outputs (≤ 1 passes); `block` 0 means the exact path's bound. */
function boundRatio(y: Float32Array, x: Float32Array, w: Float32Array, batch: number, rows: number, cols: number, block: number): number {
  const step = new Float64Array(x.length);
  if (block) {
    for (let i = 0; i < x.length; i += block) {
      let amax = 0;
      for (let j = 0; j < block; j++) amax = Math.max(amax, Math.abs(x[i + j]));
      step.fill((0.6 * amax) / 127, i, i + block);
    }
  }
  let worst = 0;
  for (let b = 0; b < batch; b++) for (let r = 0; r < rows; r++) {
    let ref = 0, l1 = 0, q = 0;
    for (let c = 0; c < cols; c++) {
      const wv = w[r * cols + c], xv = x[b * cols + c];
      ref += wv * xv;
      l1 += Math.abs(wv * xv);
      q += Math.abs(wv) * step[b * cols + c];
    }
    const got = y[b * rows + r];
    if (!Number.isFinite(got)) return Infinity;
    worst = Math.max(worst, Math.abs(got - ref) / (q + EXACT_TOL * l1 + 1e-30));
  }
  return worst;
}

/** f16 byte offsets of each format's scales (d, dmin), filled with finite values in random blocks. */
const F16_AT: Record<KQuantDType, number[]> = {
  q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208], q8_k: [], iq4_nl: [0], iq4_xs: [0], mxfp4: [],
  q4_1: [0, 2], q5_0: [0], q5_1: [0, 2],
};

/** Weight bytes [rows, cols]: random bytes with finite scales (odd seeds) or the reference quantizer of random values. */
function randomWeight(dt: KQuantDType, rows: number, cols: number, r: () => number, raw: boolean): Uint8Array {
  if (!raw) return quantizeKQuant(dt, randn(rows * cols, r), rows, cols);
  const { block, bytes } = KQUANT_LAYOUT[dt];
  const out = new Uint8Array((rows * cols / block) * bytes);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
  for (let b = 0; b < out.length / bytes; b++) {
    for (const o of F16_AT[dt]) {
      const h = f32ToF16((r() * 2 - 1) * 0.05);
      out[b * bytes + o] = h & 255;
      out[b * bytes + o + 1] = h >> 8;
    }
    if (dt === 'mxfp4') out[b * bytes] = 118 + Math.floor(r() * 12);
  }
  return out;
}

function put(k: WasmInstance, dtype: KQuantDType, bytes: Uint8Array, rows: number, cols: number): KWeight {
  return { ptr: k.arena.put(bytes), dtype, rows, cols };
}

function run(k: WasmInstance, w: KWeight, x: Float32Array, batch: number, exact = false): Float32Array {
  const X = k.arena.putF32(x), Y = k.arena.f32buf(batch * w.rows);
  poison(Y.v);
  matmul(k, Y.ptr, X.ptr, w, batch, { exact });
  return Y.v.slice();
}

/** First index where a and b differ in bits, or −1. */
function firstDiff(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i]) return i;
  return -1;
}

describe.each(BUILDS)('K-quant matmul (%s build)', (build) => {
  let k: WasmInstance;
  beforeAll(async () => {
    k = await kernels(build);
    reserveKMatmulScratch(k, 5, 1024);
  });

  it('quantizes activations to Q8_K byte for byte as the reference', () => {
    for (const cols of [256, 768]) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(cols + batch);
      const x = randn(batch * cols, r, 3);
      x.set([127, 2.5, -2.5, 0.5, -0.5, 126.5, -1.5], 0);
      if (cols > 256) x.fill(0, 256, 512); // an all-zero block
      x[600] = -9; // a negative extreme
      const X = k.arena.putF32(x), n = batch * (cols / 256) * 292, dst = k.arena.alloc(n);
      k.arena.u8(dst, n).fill(0xcd);
      quantizeActQ8K(k, dst, X.ptr, batch, cols);
      expect(Array.from(k.arena.u8(dst, n))).toEqual(Array.from(quantizeKQuant('q8_k', x, batch, cols)));
      k.arena.release(m);
    }
  });

  it.each(WEIGHT_DTYPES)('%s integer path: bit-identical to the reference, close to the f64 product', (dt) => {
    let worst = 0;
    for (const rows of ROWS) for (const cols of colsFor(dt)) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const seed = rows * 7919 + cols * 13 + batch;
      const r = rng(seed);
      const wb = randomWeight(dt, rows, cols, r, seed % 2 === 1), x = randn(batch * cols, r);
      const y = run(k, put(k, dt, wb, rows, cols), x, batch);
      const want = kmatmulRef(dt, wb, quantizeActKRef(dt, x, batch, cols), batch, rows, cols);
      const at = firstDiff(y, want);
      if (at >= 0) expect(`${dt} rows ${rows} cols ${cols} batch ${batch}: y[${at}] = ${y[at]}`).toBe(`want ${want[at]}`);
      const block = KQUANT_LAYOUT[dt].block === 32 ? 32 : 256;
      worst = Math.max(worst, boundRatio(y, x, dequantizeKQuant(dt, wb, rows * cols), batch, rows, cols, block));
      k.arena.release(m);
    }
    expect(worst, dt).toBeLessThanOrEqual(1);
  });

  it.each([...WEIGHT_DTYPES, 'q8_k' as const])('%s exact path (dequantized rows × f32 X)', (dt) => {
    for (const rows of [1, 7]) for (const cols of colsFor(dt === 'q8_k' ? 'q4_k' : dt)) for (const batch of [1, 5]) {
      const m = k.arena.mark();
      const r = rng(rows * 31 + cols + batch);
      const wb = randomWeight(dt, rows, cols, r, dt !== 'q8_k'), x = randn(batch * cols, r);
      const w = put(k, dt, wb, rows, cols);
      const deq = dequantizeKQuant(dt, wb, rows * cols);
      expect(boundRatio(run(k, w, x, batch, true), x, deq, batch, rows, cols, 0), `${dt} ${rows}×${cols} batch ${batch}`).toBeLessThanOrEqual(1);
      // q8_k is an activation format: its weights always take the exact path.
      if (dt === 'q8_k') expect(boundRatio(run(k, w, x, batch), x, deq, batch, rows, cols, 0)).toBeLessThanOrEqual(1);
      k.arena.release(m);
    }
  });

  it('the integer path differs from the exact one by the activation rounding', () => {
    const m = k.arena.mark();
    const r = rng(8);
    const wb = randomWeight('q4_k', 9, 512, r, false), x = randn(3 * 512, r);
    const w = put(k, 'q4_k', wb, 9, 512);
    const a = run(k, w, x, 3), b = run(k, w, x, 3, true);
    expect(maxRelErr(a, b)).toBeGreaterThan(1e-5);
    expect(maxRelErr(a, b)).toBeLessThan(0.05);
    k.arena.release(m);
  });

  it.each([...WEIGHT_DTYPES, 'q8_k' as const])('embedRows %s is bit-exact, scaled', (dt) => {
    const m = k.arena.mark();
    const rows = 5, cols = KQUANT_LAYOUT[dt].block * 2;
    const wb = randomWeight(dt, rows, cols, rng(dt.length), dt !== 'q8_k');
    const ids = [3, 0, 4, 3];
    const out = k.arena.f32buf(ids.length * cols);
    poison(out.v);
    const scale = Math.fround(Math.sqrt(cols));
    embedRows(k, out.ptr, put(k, dt, wb, rows, cols), ids, scale);
    const deq = dequantizeKQuant(dt, wb, rows * cols);
    const want = new Float32Array(ids.length * cols);
    ids.forEach((id, i) => { for (let c = 0; c < cols; c++) want[i * cols + c] = deq[id * cols + c] * scale; });
    expect(firstDiff(out.v, want)).toBe(-1);
    k.arena.release(m);
  });

  it('Q8_0 activations of iq4_nl / mxfp4 are ggml Q8_0 blocks', () => {
    const m = k.arena.mark();
    const r = rng(4);
    const x = randn(2 * 96, r, 2);
    const X = k.arena.putF32(x), dst = k.arena.alloc(2 * 3 * 34);
    k.exports.quantizeRowsQ8_0(dst, X.ptr, 2, 96);
    expect(Array.from(k.arena.u8(dst, 2 * 3 * 34))).toEqual(Array.from(quantizeQ8_0(x, 2, 96)));
    k.arena.release(m);
  });

  it('rejects bad shapes and buffers with KernelError', () => {
    const m = k.arena.mark();
    const X = k.arena.f32buf(4 * 512), Y = k.arena.f32buf(4 * 64);
    const w: KWeight = { ptr: k.arena.alloc(4 * 2 * 144), dtype: 'q4_k', rows: 4, cols: 512 };
    expect(() => matmul(k, Y.ptr, X.ptr, { ...w, cols: 288 }, 1)).toThrow(/not a multiple of 256/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...w, dtype: 'mxfp4', cols: 48 }, 1)).toThrow(/not a multiple of 32/);
    expect(() => matmul(k, Y.ptr, X.ptr, w, 0)).toThrow(KernelError);
    expect(() => matmul(k, X.ptr + 4, X.ptr, w, 1)).toThrow(/overlaps/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...w, rows: 1e9 }, 1)).toThrow(/past the end of memory/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...w, ptr: 0 }, 1)).toThrow(/w.ptr/);
    expect(() => embedRows(k, X.ptr, w, [4])).toThrow(/ids\[0\] = 4 is outside/);
    expect(() => quantizeActQ8K(k, Y.ptr, X.ptr, 1, 96)).toThrow(/multiple of 256/);
    k.arena.release(m);
  });

  it('grows the activation scratch on demand', () => {
    const m = k.arena.mark();
    const r = rng(77);
    const rows = 3, cols = 2048, batch = 9;
    const wb = randomWeight('q6_k', rows, cols, r, false), x = randn(batch * cols, r);
    const y = run(k, put(k, 'q6_k', wb, rows, cols), x, batch);
    expect(firstDiff(y, kmatmulRef('q6_k', wb, quantizeActKRef('q6_k', x, batch, cols), batch, rows, cols))).toBe(-1);
    k.arena.release(m);
  });
});

describe('K-quant matmul on a worker pool (threads build)', () => {
  it.each(['q4_k', 'q6_k', 'iq4_nl', 'q5_1'] as const)('%s: rows split over 3 threads give the reference bits', async (dt) => {
    const k = await instantiate({ build: 'threads' });
    const pool = await createPool(k, 3, { minWork: 0 });
    try {
      attachPool(k, pool);
      const rows = 301, cols = 1024, batch = 3;
      const r = rng(dt.length + 100);
      const wb = randomWeight(dt, rows, cols, r, false), x = randn(batch * cols, r);
      const want = kmatmulRef(dt, wb, quantizeActKRef(dt, x, batch, cols), batch, rows, cols);
      const w = put(k, dt, wb, rows, cols);
      // A worker asleep on a loaded machine may miss one call entirely; it cannot miss all of them.
      for (let i = 0; i < 20 && pool.workerChunks === 0; i++) expect(firstDiff(run(k, w, x, batch), want)).toBe(-1);
      expect(pool.workerChunks).toBeGreaterThan(0);
    } finally {
      attachPool(k, null);
      await pool.destroy();
    }
  });
});
