// Matrix products over ggml K-quant weights (assembly/kquant.ts), through matmul() or directly.
//
// W row-major [rows, cols] of blocks along cols (Q2_K … Q6_K, IQ4_XS: 256-element super-blocks;
// IQ4_NL, MXFP4, Q4_1, Q5_0, Q5_1: 32-element blocks; layouts in src/formats/kquants.ts). X [batch,
// cols] f32, Y [batch, rows] f32. As in llama.cpp, the default path quantizes X to Q8_K blocks
// (K-quants, IQ4_XS) or Q8_0 blocks (the 32-element formats) and takes exact integer dots inside
// each block; `exact`
// dequantizes each weight row to f32 and multiplies the unquantized X.
import { KQUANT_LAYOUT, type KQuantDType } from '../formats/kquants';
import { checkBuf, checkInt } from './act';
import { poolOf } from './pool';
import { KernelError } from './runtime';
import { rowBytes, type K, type Weight } from './types';

/** A weight matrix in a K-quant format. */
export type KWeight = Omit<Weight, 'dtype'> & { dtype: KQuantDType };

/** ggml type ids, the dtype codes of the kernels. */
export const KQ_CODE: Readonly<Record<KQuantDType, number>> = {
  q2_k: 10, q3_k: 11, q4_k: 12, q5_k: 13, q6_k: 14, q8_k: 15, iq4_nl: 20, iq4_xs: 23, mxfp4: 39, q4_1: 3, q5_0: 6, q5_1: 7,
};

/** Integer-path kernels per weight dtype (q8_k is an activation format: exact path only). */
const KQ_FN: Readonly<Partial<Record<KQuantDType, string>>> = {
  q2_k: 'matmulQ2_K', q3_k: 'matmulQ3_K', q4_k: 'matmulQ4_K', q5_k: 'matmulQ5_K', q6_k: 'matmulQ6_K',
  iq4_xs: 'matmulIQ4_XS', iq4_nl: 'matmulIQ4_NL', mxfp4: 'matmulMXFP4', q4_1: 'matmulQ4_1', q5_0: 'matmulQ5_0', q5_1: 'matmulQ5_1',
};

/** Whether the activations of dtype's integer path are Q8_0 (32-blocks) rather than Q8_K. */
export function usesQ8_0(dtype: KQuantDType): boolean {
  return dtype !== 'q8_k' && KQUANT_LAYOUT[dtype].block === 32;
}

export function isKWeight(w: { dtype: string } | undefined): w is KWeight {
  return !!w && Object.hasOwn(KQ_CODE, w.dtype);
}

export function checkKWeight(k: K, kernel: string, w: KWeight): void {
  checkInt(kernel, 'w.rows', w.rows);
  checkInt(kernel, 'w.cols', w.cols);
  const block = KQUANT_LAYOUT[w.dtype].block;
  if (w.cols % block !== 0) throw new KernelError(kernel, `w.cols ${w.cols} is not a multiple of ${block}, the block size of w.dtype ${w.dtype}`);
  if (!Number.isInteger(w.ptr) || w.ptr <= 0) throw new KernelError(kernel, `w.ptr: bad pointer ${w.ptr}`);
  const bytes = w.rows * rowBytes(w.dtype, w.cols);
  if (w.ptr + bytes > k.arena.size) throw new KernelError(kernel, `w: ${bytes} bytes at ${w.ptr} run past the end of memory (${k.arena.size})`);
}

function disjoint(kernel: string, an: string, a: number, aBytes: number, bn: string, b: number, bBytes: number): void {
  if (a < b + bBytes && b < a + aBytes) throw new KernelError(kernel, `${an} overlaps ${bn}`);
}

/** Bytes of the quantized activations (or of the exact path's dequantized row). */
export function kScratchBytes(dtype: KQuantDType, batch: number, cols: number, exact: boolean): number {
  if (exact) return cols * 4;
  return usesQ8_0(dtype) ? batch * (cols / 32) * 34 : batch * (cols / 256) * 292;
}

const scratches = new WeakMap<K, { ptr: number; bytes: number }>();

/**
 * Reserves the scratch of K-quant products up to maxBatch × maxCols (Q8_K blocks need the most),
 * so that no allocation happens during a forward pass; kmatmul reserves it lazily otherwise.
 */
export function reserveKMatmulScratch(k: K, maxBatch: number, maxCols: number): void {
  checkInt('reserveKMatmulScratch', 'maxBatch', maxBatch);
  checkInt('reserveKMatmulScratch', 'maxCols', maxCols);
  const cols = Math.ceil(maxCols / 256) * 256;
  const need = Math.max(kScratchBytes('q4_k', maxBatch, cols, false), kScratchBytes('iq4_nl', maxBatch, cols, false), cols * 4);
  const have = scratches.get(k);
  if (have && have.bytes >= need && have.ptr + have.bytes <= k.arena.top) return;
  scratches.set(k, { ptr: k.arena.alloc(need, 64), bytes: need });
}

function scratchFor(k: K, bytes: number, batch: number, cols: number): { ptr: number; bytes: number } {
  let s = scratches.get(k);
  // A scratch above the arena top was released by an arena.release() since it was reserved.
  if (!s || s.bytes < bytes || s.ptr + s.bytes > k.arena.top) {
    scratches.delete(k);
    reserveKMatmulScratch(k, batch, cols);
    s = scratches.get(k)!;
  }
  return s;
}

/**
 * Y[batch, w.rows] = X[batch, w.cols] · Wᵀ for K-quant W; `y`, `x` are arena offsets of f32 (y must
 * not overlap x). Rows are split over the pool attached to k (if any) on the integer path.
 */
export function kmatmul(k: K, y: number, x: number, w: KWeight, batch: number, opts: { exact?: boolean } = {}): void {
  if (!isKWeight(w)) throw new KernelError('matmul', `w.dtype must be a K-quant dtype, got ${(w as any)?.dtype}`);
  checkKWeight(k, 'matmul', w);
  checkInt('matmul', 'batch', batch);
  const { rows, cols, dtype } = w;
  checkBuf(k, 'matmul', 'x', x, batch * cols * 4);
  checkBuf(k, 'matmul', 'y', y, batch * rows * 4);
  disjoint('matmul', 'y', y, batch * rows * 4, 'x', x, batch * cols * 4);
  const fn = KQ_FN[dtype];
  const exact = !!opts.exact || fn === undefined;
  const s = scratchFor(k, kScratchBytes(dtype, batch, cols, exact), batch, cols);
  disjoint('matmul', 'y', y, batch * rows * 4, 'the activation scratch', s.ptr, s.bytes);
  disjoint('matmul', 'x', x, batch * cols * 4, 'the activation scratch', s.ptr, s.bytes);
  const ex = k.exports;
  if (exact) {
    ex.matmulKExact(y, x, w.ptr, s.ptr, KQ_CODE[dtype], batch, rows, cols, 0, rows);
    return;
  }
  if (usesQ8_0(dtype)) ex.quantizeRowsQ8_0(s.ptr, x, batch, cols);
  else ex.quantizeActQ8K(s.ptr, x, batch, cols);
  const pool = poolOf(k);
  if (pool !== undefined && pool.nThreads > 1 && rows * cols * batch >= pool.minWork) pool.run(fn!, [y, s.ptr, w.ptr, batch, rows, cols], rows);
  else ex[fn!](y, s.ptr, w.ptr, batch, rows, cols, 0, rows);
}

/** out[i, :] = dequant(table row ids[i]) · scale, as embedRows in matmul.ts, for K-quant tables. */
export function kEmbedRows(k: K, out: number, table: KWeight, ids: ArrayLike<number>, scale: number): void {
  checkKWeight(k, 'embedRows', table);
  const n = ids.length, cols = table.cols, rb = rowBytes(table.dtype, cols);
  checkBuf(k, 'embedRows', 'out', out, n * cols * 4);
  disjoint('embedRows', 'out', out, n * cols * 4, 'table', table.ptr, table.rows * rb);
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= table.rows) throw new KernelError('embedRows', `ids[${i}] = ${id} is outside [0, ${table.rows})`);
  }
  const dt = KQ_CODE[table.dtype];
  for (let i = 0; i < n; i++) k.exports.dequantRowK(out + i * cols * 4, table.ptr + ids[i] * rb, dt, cols, scale);
}

/** Q8_K blocks of X f32 [batch, cols] (cols % 256 == 0) into dst, byte-identical to ggml's quantize_row_q8_K_ref. */
export function quantizeActQ8K(k: K, dst: number, x: number, batch: number, cols: number): void {
  checkInt('quantizeActQ8K', 'batch', batch);
  checkInt('quantizeActQ8K', 'cols', cols);
  if (cols % 256 !== 0) throw new KernelError('quantizeActQ8K', `cols ${cols} is not a multiple of 256`);
  checkBuf(k, 'quantizeActQ8K', 'x', x, batch * cols * 4);
  const bytes = batch * (cols / 256) * 292;
  if (!Number.isInteger(dst) || dst <= 0 || dst + bytes > k.memory.buffer.byteLength) throw new KernelError('quantizeActQ8K', `dst: ${bytes} bytes at ${dst} do not fit in memory`);
  disjoint('quantizeActQ8K', 'dst', dst, bytes, 'x', x, batch * cols * 4);
  k.exports.quantizeActQ8K(dst, x, batch, cols);
}
