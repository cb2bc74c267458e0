// Ternary (BitNet b1.58) product dispatches: per-row int8 quantization of the input, then the
// product with a packed ternary weight (kernels/ternary.wgsl.ts; layouts of src/kernels/ternary.ts).

import { ternaryActRowBytes, ternaryBlocks } from '../../kernels/ternary';
import { ternaryMatmulWgsl, ternaryQuantWgsl, TERNARY_MATMUL_PARAMS, TERNARY_QUANT_PARAMS } from '../kernels/ternary.wgsl';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';

/** Floats of `a` the quantized rows of a product over `rows` inputs of `cols` take (q rows, then 1/s per row). */
export function ternaryScratchFloats(rows: number, cols: number): number {
  return rows * ternaryActRowBytes(cols) + rows;
}

/**
 * y[z, wRows] = f32(Σ q·t) · (1/s_z · scale) for z < rows: x rows of `cols` floats xStride apart, y rows
 * yStride apart; `scratch` holds ternaryScratchFloats(rows, cols) floats of `a`; `w` the packed weight.
 */
export function ternaryProduct(K: GpuKernels, b: GpuBufs, y: number, x: number, w: GPUBuffer,
  o: { rows: number; wRows: number; cols: number; scale: number; scratch: number; xStride?: number; yStride?: number }): Dispatch[] {
  const colsP = ternaryActRowBytes(o.cols), q = o.scratch, f = q + o.rows * colsP;
  const { nx, ny } = K.split(o.wRows);
  return [
    K.dispatch('ternary_quant', ternaryQuantWgsl, TERNARY_QUANT_PARAMS, {
      rows: o.rows, cols: o.cols, colsP, xOff: x, xStride: o.xStride ?? o.cols, qOff: q, qStride: colsP, fOff: f,
    }, b, [o.rows, 1, 1]),
    K.dispatch('ternary_matmul', ternaryMatmulWgsl, TERNARY_MATMUL_PARAMS, {
      rows: o.wRows, words: ternaryBlocks(o.cols) * 4, nx, wOff: 0, qOff: q, qStride: colsP, fOff: f, yOff: y, yStride: o.yStride ?? o.wRows, scale: o.scale,
    }, b, [nx, ny, o.rows], w),
  ];
}
