// Ternary (BitNet b1.58) matrix products: weights t ∈ {−1, 0, 1} packed 2 bits each with one f32
// scale per matrix, activations quantized per row to int8 (absmax, round half to even, as
// transformers' BitLinear does), an exact integer product, then one f32 scaling:
//   y[b, r] = f32(Σ_c q[b, c]·t[r, c]) · (a[b] · scale),   a[b] = 1/s_b, s_b = 127 / max(max_c |x[b, c]|, 1e-5)
// Layouts (assembly/ternary.ts): a packed row is ceil(cols/64) blocks of 16 bytes, byte j of block k
// holding t[64k + j + 16i] + 1 in bits 2i … 2i+1; the quantized activations of a row take
// ceil(cols/64)·64 bytes, then one i32 (Σq) and one f32 (a) per row.

import { checkBuf, checkInt } from './act';
import { poolOf } from './pool';
import { KernelError } from './runtime';
import type { K } from './types';

/** A packed ternary matrix [rows, cols] in the arena and its scale (y = (q·t)·a·scale). */
export interface TernaryWeight {
  /** The checkpoint tensor it comes from (for errors). */
  name?: string;
  ptr: number;
  rows: number;
  cols: number;
  scale: number;
}

/** 64-column blocks of a row. */
export const ternaryBlocks = (cols: number) => Math.ceil(cols / 64);
/** Bytes of one packed weight row. */
export const ternaryRowBytes = (cols: number) => ternaryBlocks(cols) * 16;
/** Bytes of one quantized activation row. */
export const ternaryActRowBytes = (cols: number) => ternaryBlocks(cols) * 64;

/**
 * Packs ternary values t [rows, cols] (each −1, 0 or 1, row-major) into the kernel layout. A value
 * outside {−1, 0, 1} is a KernelError naming its position.
 */
export function packTernary(t: ArrayLike<number>, rows: number, cols: number, name = 'weight'): Uint8Array {
  checkInt('packTernary', 'rows', rows);
  checkInt('packTernary', 'cols', cols);
  if (t.length !== rows * cols) throw new KernelError('packTernary', `${name}: ${t.length} values for ${rows}×${cols}`);
  const rb = ternaryRowBytes(cols);
  const out = new Uint8Array(rows * rb);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < ternaryBlocks(cols) * 64; c++) {
      const v = c < cols ? t[r * cols + c] : 0;
      if (v !== -1 && v !== 0 && v !== 1) throw new KernelError('packTernary', `${name}[${r}, ${c}] = ${v} is not ternary (−1, 0, 1)`);
      const k = c >> 6, i = (c & 63) >> 4, j = c & 15;
      out[r * rb + k * 16 + j] |= (v + 1) << (2 * i);
    }
  }
  return out;
}

/** The ternary values of a packed matrix (−1, 0, 1), [rows, cols] row-major. */
export function unpackTernary(bytes: Uint8Array, rows: number, cols: number): Int8Array {
  const rb = ternaryRowBytes(cols);
  const t = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const k = c >> 6, i = (c & 63) >> 4, j = c & 15;
      t[r * cols + c] = ((bytes[r * rb + k * 16 + j] >> (2 * i)) & 3) - 1;
    }
  }
  return t;
}

/** Bytes of the activation scratch of a product over `batch` rows of `cols` (see ternaryMatmul). */
export function ternaryScratchBytes(batch: number, cols: number): number {
  return batch * ternaryActRowBytes(cols) + batch * 8;
}

/**
 * Quantizes X [batch, cols] f32 at x into `scratch` (ternaryScratchBytes(batch, cols) bytes): int8
 * rows, then Σq (i32) and 1/s (f32) per row.
 */
export function quantizeActTernary(k: K, scratch: number, x: number, batch: number, cols: number): void {
  checkInt('quantizeActTernary', 'batch', batch);
  checkInt('quantizeActTernary', 'cols', cols);
  checkBuf(k, 'quantizeActTernary', 'x', x, batch * cols * 4);
  checkBuf(k, 'quantizeActTernary', 'scratch', scratch, ternaryScratchBytes(batch, cols));
  const xq = scratch, xs = xq + batch * ternaryActRowBytes(cols), xa = xs + batch * 4;
  k.exports.quantizeActTernary(xq, xs, xa, x, batch, cols);
}

function checkWeight(k: K, w: TernaryWeight): void {
  if (!w) throw new KernelError('ternaryMatmul', 'no weight');
  checkInt('ternaryMatmul', 'w.rows', w.rows);
  checkInt('ternaryMatmul', 'w.cols', w.cols);
  if (!Number.isFinite(w.scale)) throw new KernelError('ternaryMatmul', `${w.name ?? 'w'}: scale ${w.scale} is not finite`);
  const bytes = w.rows * ternaryRowBytes(w.cols);
  if (!Number.isInteger(w.ptr) || w.ptr <= 0 || w.ptr % 16 !== 0) throw new KernelError('ternaryMatmul', `w.ptr: bad pointer ${w.ptr}`);
  if (w.ptr + bytes > k.arena.size) throw new KernelError('ternaryMatmul', `w: ${bytes} bytes at ${w.ptr} run past the end of memory (${k.arena.size})`);
}

const overlap = (a: number, an: number, b: number, bn: number) => a < b + bn && b < a + an;

/**
 * Y [batch, w.rows] f32 = quant(X [batch, w.cols]) · Tᵀ · (1/s · w.scale): X quantized into `scratch`
 * (ternaryScratchBytes(batch, w.cols) bytes, not overlapping x or y), then the integer product.
 * Rows are split over the pool attached to k (if any) when the product is large enough; every row is
 * computed by the same code whatever thread takes it, and whatever other rows share the call.
 */
export function ternaryMatmul(k: K, y: number, x: number, w: TernaryWeight, batch: number, scratch: number): void {
  checkWeight(k, w);
  checkInt('ternaryMatmul', 'batch', batch);
  const { rows, cols } = w;
  checkBuf(k, 'ternaryMatmul', 'y', y, batch * rows * 4);
  const sb = ternaryScratchBytes(batch, cols);
  if (overlap(y, batch * rows * 4, x, batch * cols * 4)) throw new KernelError('ternaryMatmul', 'y overlaps x');
  if (overlap(scratch, sb, x, batch * cols * 4) || overlap(scratch, sb, y, batch * rows * 4)) throw new KernelError('ternaryMatmul', 'the scratch overlaps x or y');
  quantizeActTernary(k, scratch, x, batch, cols);
  const xq = scratch, xs = xq + batch * ternaryActRowBytes(cols), xa = xs + batch * 4;
  const pool = poolOf(k);
  if (pool !== undefined && pool.nThreads > 1 && rows * cols * batch >= pool.minWork) {
    pool.run('matmulTernary', [y, xq, xs, xa, w.ptr, Math.fround(w.scale), batch, rows, cols], rows);
  } else {
    k.exports.matmulTernary(y, xq, xs, xa, w.ptr, w.scale, batch, rows, cols, 0, rows);
  }
}
