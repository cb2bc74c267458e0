import { beforeAll, describe, expect, it } from 'vitest';
import { embedRows, matmul, q8_0CountMin, quantizeRowsQ4_0, quantizeRowsQ8_0, reserveMatmulScratch } from '../src/kernels/matmul';
import {
  dequantActRef, dequantRef, f16ToF32Ref, f32ToF16Ref, matmulRef, quantizeActRef, quantizeQ4_0Ref, quantizeQ8_0Ref,
} from '../src/kernels/reference';
import { KernelError, type WasmInstance } from '../src/kernels/runtime';
import { rowBytes, type Weight, type WeightDType } from '../src/kernels/types';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances (max |err| / max |ref|):
// - f32/f16/bf16 weights: 1e-5 against float64 sums of the exactly decoded weights; the kernel's
//   f32 accumulation over ≤ 257 terms stays around 1e-6.
// - Q8_0/Q4_0 integer path: 1e-5 against float64 sums of the same dequantized weight blocks and the
//   same quantized activations (checked byte for byte first), so only the f32 rounding of ≤ 9 block
//   terms (and of d_w·d_x) differs.
// - exact path: 1e-5 against float64 sums of the dequantized blocks and the unquantized X.
// Quantizers and embeddings have no rounding freedom: byte- and bit-exact.

const FLOAT_ROWS = [1, 7, 33, 257], FLOAT_COLS = [1, 7, 33, 257], BATCHES = [1, 3, 17, 64];
const Q_COLS = [32, 96, 288];

/** Random weight bytes [rows, cols] in dtype: f16 includes subnormals; quantized blocks have random q and ± scales. */
function randomWeight(dtype: WeightDType, rows: number, cols: number, r: () => number): Uint8Array {
  const n = rows * cols;
  switch (dtype) {
    case 'f32':
      return new Uint8Array(randn(n, r).buffer);
    case 'f16': {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = r() < 0.1 ? (Math.floor(r() * 1024) | (r() < 0.5 ? 0x8000 : 0)) : f32ToF16Ref((r() * 2 - 1) * 2);
      return new Uint8Array(h.buffer);
    }
    case 'bf16': {
      const f = randn(n, r, 2);
      const u = new Uint32Array(f.buffer), h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = u[i] >>> 16;
      return new Uint8Array(h.buffer);
    }
    case 'q8_0':
    case 'q4_0': {
      const bs = dtype === 'q8_0' ? 34 : 18;
      const out = new Uint8Array((n / 32) * bs);
      const dv = new DataView(out.buffer);
      for (let b = 0; b < n / 32; b++) {
        dv.setUint16(b * bs, f32ToF16Ref((r() * 2 - 1) * 0.05), true);
        for (let j = 2; j < bs; j++) out[b * bs + j] = dtype === 'q8_0' ? (Math.floor(r() * 255) - 127) & 255 : Math.floor(r() * 256);
      }
      return out;
    }
  }
}

function put(k: WasmInstance, dtype: WeightDType, bytes: Uint8Array, rows: number, cols: number): Weight {
  return { ptr: k.arena.put(bytes), dtype, rows, cols };
}

/** Runs matmul on fresh poisoned output; returns Y. */
function runMatmul(k: WasmInstance, w: Weight, x: Float32Array, batch: number, exact = false): Float32Array {
  const X = k.arena.putF32(x), Y = k.arena.f32buf(batch * w.rows);
  poison(Y.v);
  matmul(k, Y.ptr, X.ptr, w, batch, { exact });
  return Y.v.slice();
}

describe.each(BUILDS)('matmul (%s build)', (build) => {
  let k: WasmInstance;
  beforeAll(async () => {
    k = await kernels(build);
    reserveMatmulScratch(k, 64, 288);
  });

  it.each(['f32', 'f16', 'bf16'] as const)('%s weights at rows 1/7/33/257 × cols 1/7/33/257 × batch 1/3/17/64', (dtype) => {
    for (const rows of FLOAT_ROWS) for (const cols of FLOAT_COLS) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(rows * 1009 + cols * 31 + batch);
      const wb = randomWeight(dtype, rows, cols, r), x = randn(batch * cols, r);
      const y = runMatmul(k, put(k, dtype, wb, rows, cols), x, batch);
      const err = maxRelErr(y, matmulRef(x, dequantRef(dtype, wb, rows, cols), batch, rows, cols));
      expect(err, `${dtype} rows ${rows} cols ${cols} batch ${batch}`).toBeLessThan(1e-5);
      k.arena.release(m);
    }
  });

  it('f16 weights with inf and NaN give inf/NaN in exactly the rows that hold them', () => {
    const rows = 9, cols = 21;
    for (const batch of [1, 2, 5]) {
      const m = k.arena.mark();
      const r = rng(batch + 40);
      const wb = randomWeight('f16', rows, cols, r);
      const h = new Uint16Array(wb.buffer);
      h[2 * cols + 3] = 0x7c00; // +inf in row 2 (vector part of the row)
      h[5 * cols + 18] = 0xfc00; // −inf in row 5 (scalar tail of the row)
      h[7 * cols + 9] = 0x7e01; // NaN in row 7
      const x = randn(batch * cols, r).map((v) => Math.abs(v) + 0.5); // > 0: the signs of ±inf survive
      const y = runMatmul(k, put(k, 'f16', wb, rows, cols), x, batch);
      const want = matmulRef(x, dequantRef('f16', wb, rows, cols), batch, rows, cols);
      for (let b = 0; b < batch; b++) for (let i = 0; i < rows; i++) {
        const g = y[b * rows + i], e = want[b * rows + i];
        if (!Number.isFinite(e)) expect(g, `batch ${b} row ${i}`).toBe(e);
        else expect(Math.abs(g - e), `batch ${b} row ${i}`).toBeLessThan(1e-4 * Math.max(1, Math.abs(e)));
      }
      expect([y[2], y[5], y[7]]).toEqual([Infinity, -Infinity, NaN]);
      k.arena.release(m);
    }
  });

  it('quantizes activations exactly as the reference (q, d, Σq)', () => {
    for (const cols of Q_COLS) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(cols * 3 + batch);
      const x = randn(batch * cols, r, 3);
      // Ties of x·id at ±k.5 and an all-zero block.
      x.set([127, 2.5, -2.5, 0.5, -0.5, 126.5, -1.5], 0);
      if (cols >= 64) x.fill(0, 32, 64);
      const nb = cols / 32;
      const X = k.arena.putF32(x), xq = k.arena.alloc(batch * cols), xd = k.arena.alloc(batch * nb * 4), xs = k.arena.alloc(batch * nb * 4);
      k.exports.quantizeActQ8(xq, xd, xs, X.ptr, batch, cols);
      const want = quantizeActRef(x, batch, cols);
      expect(Array.from(new Int8Array(k.memory.buffer, xq, batch * cols))).toEqual(Array.from(want.q));
      const d = k.arena.f32(xd, batch * nb), s = k.arena.i32(xs, batch * nb);
      for (let b = 0; b < batch; b++) for (let j = 0; j < nb; j++) {
        expect(d[j * batch + b]).toBe(want.d[b * nb + j]);
        expect(s[j * batch + b]).toBe(want.s[b * nb + j]);
      }
      expect(want.q[1]).toBe(3);
      expect(want.q[2]).toBe(-3);
      k.arena.release(m);
    }
  });

  it.each(['q8_0', 'q4_0'] as const)('%s integer path at rows 1/7/33/257 × cols 32/96/288 × batch 1/3/17/64', (dtype) => {
    for (const rows of FLOAT_ROWS) for (const cols of Q_COLS) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(rows * 7919 + cols * 13 + batch);
      const wb = randomWeight(dtype, rows, cols, r), x = randn(batch * cols, r);
      const y = runMatmul(k, put(k, dtype, wb, rows, cols), x, batch);
      const xa = dequantActRef(quantizeActRef(x, batch, cols), batch, cols);
      const err = maxRelErr(y, matmulRef(xa, dequantRef(dtype, wb, rows, cols), batch, rows, cols));
      expect(err, `${dtype} rows ${rows} cols ${cols} batch ${batch}`).toBeLessThan(1e-5);
      k.arena.release(m);
    }
  });

  it.each(['q8_0', 'q4_0'] as const)('%s exact path (dequantized weights × f32 X)', (dtype) => {
    for (const rows of FLOAT_ROWS) for (const cols of Q_COLS) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(rows * 6007 + cols * 17 + batch);
      const wb = randomWeight(dtype, rows, cols, r), x = randn(batch * cols, r);
      const y = runMatmul(k, put(k, dtype, wb, rows, cols), x, batch, true);
      const err = maxRelErr(y, matmulRef(x, dequantRef(dtype, wb, rows, cols), batch, rows, cols));
      expect(err, `${dtype} rows ${rows} cols ${cols} batch ${batch}`).toBeLessThan(1e-5);
      k.arena.release(m);
    }
  });

  it('the integer path is what quantized activations give, not the exact product', () => {
    // Guards against the default path silently taking the exact route: the two differ by the
    // activation rounding (≈ 1/254 of a block's amax per element).
    const m = k.arena.mark();
    const r = rng(5);
    const wb = randomWeight('q8_0', 33, 96, r), x = randn(3 * 96, r);
    const w = put(k, 'q8_0', wb, 33, 96);
    const a = runMatmul(k, w, x, 3), b = runMatmul(k, w, x, 3, true);
    expect(maxRelErr(a, b)).toBeGreaterThan(1e-4);
    k.arena.release(m);
  });

  it('rejects bad shapes and buffers with KernelError', () => {
    const m = k.arena.mark();
    const X = k.arena.f32buf(64 * 4), Y = k.arena.f32buf(64 * 4);
    const w8 = { ptr: k.arena.alloc(4 * 34 * 2), dtype: 'q8_0' as const, rows: 4, cols: 48 };
    expect(() => matmul(k, Y.ptr, X.ptr, w8, 1)).toThrow(KernelError);
    expect(() => matmul(k, Y.ptr, X.ptr, w8, 1)).toThrow(/w.cols 48 is not a multiple of 32/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...w8, dtype: 'q4_0', cols: 33 }, 1)).toThrow(/multiple of 32/);
    const wf = { ptr: k.arena.alloc(4 * 8 * 4), dtype: 'f32' as const, rows: 4, cols: 8 };
    expect(() => matmul(k, Y.ptr, X.ptr, wf, 0)).toThrow(/batch/);
    expect(() => matmul(k, X.ptr + 4, X.ptr, wf, 2)).toThrow(/overlaps/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...wf, rows: 1e9 }, 1)).toThrow(/past the end of memory/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...wf, dtype: 'q5_x' as any }, 1)).toThrow(/dtype/);
    expect(() => matmul(k, Y.ptr, X.ptr, { ...wf, ptr: 0 }, 1)).toThrow(/w.ptr/);
    expect(() => quantizeRowsQ8_0(k, Y.ptr, X.ptr, 1, 48)).toThrow(/multiple of 32/);
    k.arena.release(m);
  });

  it('grows the activation scratch on demand', () => {
    const m = k.arena.mark();
    const r = rng(77);
    const rows = 5, cols = 1024, batch = 70;
    const wb = randomWeight('q4_0', rows, cols, r), x = randn(batch * cols, r);
    const y = runMatmul(k, put(k, 'q4_0', wb, rows, cols), x, batch);
    const xa = dequantActRef(quantizeActRef(x, batch, cols), batch, cols);
    expect(maxRelErr(y, matmulRef(xa, dequantRef('q4_0', wb, rows, cols), batch, rows, cols))).toBeLessThan(1e-5);
    k.arena.release(m);
  });

  it.each(['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const)('embedRows %s is bit-exact, scaled', (dtype) => {
    for (const cols of dtype.startsWith('q') ? [32, 96] : [1, 7, 33]) {
      const m = k.arena.mark();
      const r = rng(cols + dtype.length);
      const rows = 11;
      const wb = randomWeight(dtype, rows, cols, r);
      const table = put(k, dtype, wb, rows, cols);
      const ids = [3, 0, 10, 3, 7];
      const scale = Math.fround(Math.sqrt(cols));
      const out = k.arena.f32buf(ids.length * cols);
      poison(out.v);
      embedRows(k, out.ptr, table, ids, scale);
      const deq = dequantRef(dtype, wb, rows, cols);
      const want = new Float32Array(ids.length * cols);
      ids.forEach((id, i) => { for (let c = 0; c < cols; c++) want[i * cols + c] = deq[id * cols + c] * scale; });
      expect(Array.from(out.v)).toEqual(Array.from(want));
      expect(() => embedRows(k, out.ptr, table, [0, rows])).toThrow(/ids\[1\] = 11 is outside/);
      expect(() => embedRows(k, out.ptr, table, [-1])).toThrow(KernelError);
      expect(() => embedRows(k, out.ptr, table, [0.5])).toThrow(KernelError);
      k.arena.release(m);
    }
  });

  it('decodes every f16 bit pattern exactly (vector and scalar paths)', () => {
    const m = k.arena.mark();
    const all = new Uint16Array(65536).map((_, i) => i);
    for (const cols of [64, 3]) {
      const rows = Math.floor(65536 / cols), n = rows * cols;
      const table = put(k, 'f16', new Uint8Array(all.buffer, 0, n * 2), rows, cols);
      const out = k.arena.f32buf(n);
      poison(out.v);
      embedRows(k, out.ptr, table, Array.from({ length: rows }, (_, i) => i));
      const bits = new Uint32Array(out.v.buffer, out.ptr, n);
      for (let h = 0; h < n; h++) {
        const want = f16ToF32Ref(h);
        if (Number.isNaN(want)) {
          // The ·scale multiply may canonicalize a NaN's payload (wasm leaves NaN bits open).
          if (!Number.isNaN(out.v[h])) expect(`0x${bits[h].toString(16)} for f16 0x${h.toString(16)}`).toBe('NaN');
        } else if (out.v[h] !== want || Object.is(want, -0) !== Object.is(out.v[h], -0)) {
          expect(out.v[h], `f16 0x${h.toString(16)}`).toBe(want);
        }
      }
    }
    k.arena.release(m);
  });

  it.each(['q8_0', 'q4_0'] as const)('quantizeRows %s is byte-identical to the ggml reference', (dtype) => {
    for (const rows of [1, 7, 33]) for (const cols of Q_COLS) {
      const m = k.arena.mark();
      const r = rng(rows * 100 + cols + dtype.length);
      const src = randn(rows * cols, r, 2);
      const nb = (rows * cols) / 32;
      // Special blocks: zeros; exact ties of x·id; magnitudes that make d subnormal, zero or
      // infinite in f16; equal magnitudes of opposite sign (Q4_0 keeps the first); d on f16 ties.
      const special: number[][] = [
        new Array(32).fill(0),
        [127, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5, 63.5],
        [-8, 6.5, -0.5, 0.5, 7.5, -7.5, 3.5, 1.0 / 3],
        [-8 * (1 + 2 ** -11), 1, 2, 3, -4, 5.5],
        [8 * (1 + 3 * 2 ** -11), -1, 0.25],
        [-8 * 2 ** -20 * (1 + 2 ** -11), 2 ** -21],
        [1e-6, -3e-7, 2e-7],
        [1e-10, 5e-11],
        [1e7, -5e6, 3],
        [-3, 3, 1],
        [3, -3, 1],
        [65504 * 127, 1],
      ];
      for (let i = 0; i < Math.min(nb, special.length); i++) {
        const blk = special[i];
        for (let j = 0; j < 32; j++) src[i * 32 + j] = j < blk.length ? blk[j] : (r() * 2 - 1) * Math.abs(blk[0]) * 0.9;
      }
      const S = k.arena.putF32(src);
      const bs = dtype === 'q8_0' ? 34 : 18;
      const dst = k.arena.alloc(nb * bs);
      k.arena.u8(dst, nb * bs).fill(0xcd);
      (dtype === 'q8_0' ? quantizeRowsQ8_0 : quantizeRowsQ4_0)(k, dst, S.ptr, rows, cols);
      const want = (dtype === 'q8_0' ? quantizeQ8_0Ref : quantizeQ4_0Ref)(src, rows, cols);
      const got = k.arena.u8(dst, nb * bs);
      for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) expect(`${got[i]} at byte ${i}`).toBe(`${want[i]} at byte ${i}`);
      k.arena.release(m);
    }
  });

  it('counts Q8_0 quants of −128', () => {
    const m = k.arena.mark();
    const wb = randomWeight('q8_0', 3, 64, rng(9));
    wb[2 + 5] = 0x80;
    wb[34 * 3 + 2 + 31] = 0x80;
    wb[34 * 5 + 2 + 16] = 0x80;
    expect(q8_0CountMin(k, put(k, 'q8_0', wb, 3, 64))).toBe(3);
    k.arena.release(m);
  });
});

describe('quantized paths: relaxed and baseline builds agree bit for bit', () => {
  it.each(['q8_0', 'q4_0'] as const)('%s', async (dtype) => {
    const a = await kernels('relaxed'), b = await kernels('simd');
    expect(a.build).toBe('relaxed');
    for (const k of [a, b]) reserveMatmulScratch(k, 64, 288);
    for (const rows of FLOAT_ROWS) for (const cols of Q_COLS) for (const batch of BATCHES) {
      const r = rng(rows * 31 + cols * 7 + batch * 3);
      const wb = randomWeight(dtype, rows, cols, r), x = randn(batch * cols, r, 4);
      const outs = [a, b].map((k) => {
        const m = k.arena.mark();
        const y = runMatmul(k, put(k, dtype, wb, rows, cols), x, batch);
        k.arena.release(m);
        return y;
      });
      expect(outs[0].every(Number.isFinite)).toBe(true);
      const ua = new Uint32Array(outs[0].buffer), ub = new Uint32Array(outs[1].buffer);
      let diff = 0;
      for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) diff++;
      expect(diff, `${dtype} rows ${rows} cols ${cols} batch ${batch}`).toBe(0);
    }
  });
});

describe('runtime', () => {
  it('selects the relaxed build on this engine and the baseline when forced', async () => {
    const a = await kernels('relaxed');
    expect(a.build).toBe('relaxed');
    expect(a.exports.buildFeatures() & 1).toBe(1);
    const b = await kernels('simd');
    expect(b.exports.buildFeatures() & 1).toBe(0);
  });

  it('rowBytes covers every dtype', () => {
    expect([rowBytes('f32', 64), rowBytes('f16', 64), rowBytes('bf16', 64), rowBytes('q8_0', 64), rowBytes('q4_0', 64)]).toEqual([256, 128, 128, 68, 36]);
  });
});
