// Matrix products over every weight dtype, embedding lookup, and GGUF block quantization.
//
// Layouts: W row-major [rows, cols] (HF Linear: out × in), rows contiguous, Q8_0/Q4_0 blocks of 32
// along cols (Q8_0: f16 d + 32 int8, 34 B; Q4_0: f16 d + 16 B, byte j = element j | element j+16 << 4,
// value (q − 8)·d). X [batch, cols] f32, Y [batch, rows] f32. K-quant weights (q2_k … q6_k, iq4_nl,
// iq4_xs, mxfp4) go to kquant.ts.
import { checkBuf, checkInt } from './act';
import { isKWeight, kEmbedRows, kmatmul, type KWeight } from './kquant';
import { poolOf } from './pool';
import { KernelError } from './runtime';
import { rowBytes, type K, type Weight, type WeightDType } from './types';

const DT_CODE: Record<WeightDType, number> = { f32: 0, f16: 1, bf16: 2, q8_0: 3, q4_0: 4 };

export interface MatmulOptions {
  /**
   * Quantized weights only: dequantize each block in registers and multiply the f32 activations
   * (no activation quantization), f32 accumulation. For parity runs against float references.
   */
  exact?: boolean;
}

/** A weight in one of the dtypes this file's kernels take (not a K-quant). */
type DenseWeight = Weight & { dtype: WeightDType };

function checkWeight(k: K, kernel: string, w: Weight): asserts w is DenseWeight {
  if (!w || !Object.hasOwn(DT_CODE, w.dtype)) {
    throw new KernelError(kernel, `w.dtype must be f32, f16, bf16, q8_0, q4_0 or a K-quant (q2_k … q6_k, iq4_nl, iq4_xs, mxfp4), got ${w?.dtype}`);
  }
  checkInt(kernel, 'w.rows', w.rows);
  checkInt(kernel, 'w.cols', w.cols);
  if ((w.dtype === 'q8_0' || w.dtype === 'q4_0') && w.cols % 32 !== 0) {
    throw new KernelError(kernel, `w.cols ${w.cols} is not a multiple of 32, which ${w.dtype} blocks need`);
  }
  const bytes = w.rows * rowBytes(w.dtype, w.cols);
  if (!Number.isInteger(w.ptr) || w.ptr <= 0) throw new KernelError(kernel, `w.ptr: bad pointer ${w.ptr}`);
  if (w.ptr + bytes > k.arena.size) {
    throw new KernelError(kernel, `w: ${bytes} bytes at ${w.ptr} run past the end of memory (${k.arena.size})`);
  }
}

function disjoint(kernel: string, an: string, a: number, aBytes: number, bn: string, b: number, bBytes: number): void {
  if (a < b + bBytes && b < a + aBytes) throw new KernelError(kernel, `${an} overlaps ${bn}`);
}

// ---------------------------------------------------------------------------------------------
// Scratch for the quantized activations of the integer path (see quantizeActQ8 in
// assembly/quant.ts): xq int8 [batch, cols], then xd f32 and xs i32 [cols/32, batch].
// One region per instance, reused by every matmul.

interface Scratch {
  ptr: number;
  bytes: number;
}
const scratches = new WeakMap<K, Scratch>();

const up64 = (n: number) => Math.ceil(n / 64) * 64;
function scratchBytes(batch: number, cols: number): number {
  return up64(batch * cols) + 2 * up64(batch * (cols / 32) * 4);
}

/**
 * Reserves the activation-quantization scratch for products up to maxBatch × maxCols. matmul
 * reserves it lazily when missing or too small, which allocates from the arena (and may grow
 * memory) mid-forward; models call this once at load with their largest chunk and input width so
 * that no allocation happens during a forward pass. Do not reserve inside an arena mark/release
 * window that is released while the scratch is still wanted.
 */
export function reserveMatmulScratch(k: K, maxBatch: number, maxCols: number): void {
  checkInt('reserveMatmulScratch', 'maxBatch', maxBatch);
  checkInt('reserveMatmulScratch', 'maxCols', maxCols);
  const cols = Math.ceil(maxCols / 32) * 32;
  const need = scratchBytes(maxBatch, cols);
  const have = scratches.get(k);
  if (have && have.bytes >= need) return;
  scratches.set(k, { ptr: k.arena.alloc(need, 64), bytes: need });
}

/**
 * Instances whose Q8_0/Q4_0 products give each row of X the same bits whatever other rows share the
 * call (setBatchInvariant).
 */
const invariant = new WeakSet<K>();

/**
 * Makes the Q8_0/Q4_0 products of instance `k` batch-invariant, or back to the default. The kernels
 * take X four rows at a time and the rows left over one at a time, and the two paths sum the block
 * terms in different orders, so by default a row's last bits depend on how many rows share its call
 * and where it sits among them. Batch-invariant, every row runs the one-row path, so its products
 * are the ones it gets alone, in any batch (the step batcher's decode passes rely on it: see
 * generate/batcher.ts). Float and K-quant weights are batch-invariant either way.
 */
export function setBatchInvariant(k: K, on: boolean): void {
  if (on) invariant.add(k);
  else invariant.delete(k);
}

/** Whether setBatchInvariant(k, true) is in force. */
export function isBatchInvariant(k: K): boolean {
  return invariant.has(k);
}

/**
 * Batch-invariant Q8_0/Q4_0 product (batch ≥ 2): the kernels in calls of at most three X rows, so
 * every row takes their one-row path, whose sums do not depend on the other rows of the call. A
 * weight row stays in cache while the call's rows pass over it. (Calls of one row each over weight
 * tiles, which stream the weights once for the whole batch, measured slower: the one-row path is
 * bound by its arithmetic, not by memory.)
 */
function matmulInvariant(k: K, y: number, x: number, w: DenseWeight, batch: number, opts: MatmulOptions): void {
  const { rows, cols } = w;
  for (let b = 0; b < batch; b += 3) matmulChecked(k, y + b * rows * 4, x + b * cols * 4, w, Math.min(3, batch - b), opts);
}

/**
 * Y[batch, w.rows] = X[batch, w.cols] · Wᵀ. `y`, `x` are arena offsets of f32 (y must not overlap
 * x). Quantized weights by default quantize X per 32-block to int8 (d = amax/127, round half away
 * from zero) and take exact integer block dots, as llama.cpp does; `exact` multiplies the f32
 * activations by the dequantized weights instead. The relaxed and baseline builds give
 * bit-identical results on the quantized paths. Rows are split over the pool attached to k (if
 * any) when the product is large enough.
 */
export function matmul(k: K, y: number, x: number, w: Weight | KWeight, batch: number, opts: MatmulOptions = {}): void {
  if (isKWeight(w)) {
    kmatmul(k, y, x, w, batch, opts);
    return;
  }
  checkWeight(k, 'matmul', w);
  checkInt('matmul', 'batch', batch);
  const { rows, cols } = w;
  checkBuf(k, 'matmul', 'x', x, batch * cols * 4);
  checkBuf(k, 'matmul', 'y', y, batch * rows * 4);
  disjoint('matmul', 'y', y, batch * rows * 4, 'x', x, batch * cols * 4);
  if (batch > 1 && invariant.has(k) && (w.dtype === 'q8_0' || w.dtype === 'q4_0')) {
    matmulInvariant(k, y, x, w, batch, opts);
    return;
  }
  matmulChecked(k, y, x, w, batch, opts);
}

/** matmul() of a dense weight after its checks: the kernel over every row at once (split over the pool when large). */
function matmulChecked(k: K, y: number, x: number, w: DenseWeight, batch: number, opts: MatmulOptions): void {
  const { rows, cols } = w;
  const work = rows * cols * batch;
  const pool = poolOf(k);
  // Decode-sized products call the kernel directly (no argument array).
  const split = pool !== undefined && pool.nThreads > 1 && work >= pool.minWork;
  const ex = k.exports;
  const quant = w.dtype === 'q8_0' || w.dtype === 'q4_0';
  if (!quant || opts.exact) {
    const fn = F32_IN[w.dtype];
    if (split) pool.run(fn, [y, x, w.ptr, batch, rows, cols], rows);
    else ex[fn](y, x, w.ptr, batch, rows, cols, 0, rows);
    return;
  }
  const need = scratchBytes(batch, cols);
  let s = scratches.get(k);
  // A scratch above the arena top was released by an arena.release() since it was reserved.
  if (!s || s.bytes < need || s.ptr + s.bytes > k.arena.top) {
    if (s && s.ptr + s.bytes > k.arena.top) scratches.delete(k);
    reserveMatmulScratch(k, batch, cols);
    s = scratches.get(k)!;
  }
  const xq = s.ptr, xd = xq + up64(batch * cols), xs = xd + up64(batch * (cols / 32) * 4);
  disjoint('matmul', 'y', y, batch * rows * 4, 'the activation scratch', s.ptr, s.bytes);
  disjoint('matmul', 'x', x, batch * cols * 4, 'the activation scratch', s.ptr, s.bytes);
  ex.quantizeActQ8(xq, xd, xs, x, batch, cols);
  const fn = w.dtype === 'q8_0' ? 'matmulQ8_0' : 'matmulQ4_0';
  if (split) pool.run(fn, [y, xq, xd, xs, w.ptr, batch, rows, cols], rows);
  else ex[fn](y, xq, xd, xs, w.ptr, batch, rows, cols, 0, rows);
}

/** The kernels taking f32 activations, per weight dtype (quantized ones: the `exact` path). */
const F32_IN: Record<WeightDType, 'matmulF32' | 'matmulF16' | 'matmulBF16' | 'matmulQ8_0Exact' | 'matmulQ4_0Exact'> = {
  f32: 'matmulF32', f16: 'matmulF16', bf16: 'matmulBF16', q8_0: 'matmulQ8_0Exact', q4_0: 'matmulQ4_0Exact',
};

/**
 * out[i, :] = dequant(table row ids[i]) · scale for i < ids.length; out is f32 [ids.length, table.cols].
 * An id outside [0, table.rows) is a KernelError naming its position.
 */
export function embedRows(k: K, out: number, table: Weight | KWeight, ids: ArrayLike<number>, scale = 1): void {
  if (!Number.isFinite(scale)) throw new KernelError('embedRows', `scale must be finite, got ${scale}`);
  if (isKWeight(table)) {
    kEmbedRows(k, out, table, ids, scale);
    return;
  }
  checkWeight(k, 'embedRows', table);
  const n = ids.length, cols = table.cols;
  checkBuf(k, 'embedRows', 'out', out, n * cols * 4);
  const rb = rowBytes(table.dtype, cols);
  disjoint('embedRows', 'out', out, n * cols * 4, 'table', table.ptr, table.rows * rb);
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= table.rows) {
      throw new KernelError('embedRows', `ids[${i}] = ${id} is outside [0, ${table.rows})`);
    }
  }
  const dequantRow = k.exports.dequantRow, dt = DT_CODE[table.dtype];
  for (let i = 0; i < n; i++) dequantRow(out + i * cols * 4, table.ptr + ids[i] * rb, dt, cols, scale);
}

function quantArgs(k: K, kernel: string, dst: number, src: number, rows: number, cols: number, blockBytes: number): void {
  checkInt(kernel, 'rows', rows);
  checkInt(kernel, 'cols', cols);
  if (cols % 32 !== 0) throw new KernelError(kernel, `cols ${cols} is not a multiple of 32`);
  checkBuf(k, kernel, 'src', src, rows * cols * 4);
  const bytes = (rows * cols / 32) * blockBytes;
  if (!Number.isInteger(dst) || dst <= 0 || dst + bytes > k.memory.buffer.byteLength) {
    throw new KernelError(kernel, `dst: ${bytes} bytes at ${dst} do not fit in memory`);
  }
  disjoint(kernel, 'dst', dst, bytes, 'src', src, rows * cols * 4);
}

/** GGUF Q8_0 of src f32 [rows, cols] into dst (rows·cols/32 × 34 B), byte-identical to ggml's quantize_row_q8_0_ref. */
export function quantizeRowsQ8_0(k: K, dst: number, src: number, rows: number, cols: number): void {
  quantArgs(k, 'quantizeRowsQ8_0', dst, src, rows, cols, 34);
  k.exports.quantizeRowsQ8_0(dst, src, rows, cols);
}

/** GGUF Q4_0 of src f32 [rows, cols] into dst (rows·cols/32 × 18 B), byte-identical to ggml's quantize_row_q4_0_ref. */
export function quantizeRowsQ4_0(k: K, dst: number, src: number, rows: number, cols: number): void {
  quantArgs(k, 'quantizeRowsQ4_0', dst, src, rows, cols, 18);
  k.exports.quantizeRowsQ4_0(dst, src, rows, cols);
}

/**
 * Number of Q8_0 quants equal to −128 in w. ggml's quantizers never write −128; the relaxed build's
 * sign-transfer dot cannot negate it, so a loader can check foreign files with this.
 */
export function q8_0CountMin(k: K, w: Weight): number {
  if (w.dtype !== 'q8_0') throw new KernelError('q8_0CountMin', `w.dtype must be q8_0, got ${w.dtype}`);
  checkWeight(k, 'q8_0CountMin', w);
  return k.exports.q8_0CountMin(w.ptr, (w.rows * w.cols) / 32);
}
