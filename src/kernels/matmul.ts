import { KernelError } from './runtime';
import type { K, Weight } from './types';

function checkPtr(name: string, p: number): void {
  if (!Number.isInteger(p) || p <= 0) throw new KernelError(name, `bad pointer ${p}`);
}

/**
 * Y[batch, rows] = X[batch, cols] · Wᵀ. `y`, `x` are arena offsets; W is any weight dtype.
 * Rows are split over the worker pool when the instance has one.
 */
export function matmul(k: K, y: number, x: number, w: Weight, batch: number): void {
  checkPtr('matmul', y);
  checkPtr('matmul', x);
  if (batch < 1) throw new KernelError('matmul', `batch ${batch} < 1`);
  switch (w.dtype) {
    case 'f32':
      k.exports.matmulF32(y, x, w.ptr, batch, w.rows, w.cols, 0, w.rows);
      return;
    default:
      throw new KernelError('matmul', `weight dtype ${w.dtype} not supported`);
  }
}
