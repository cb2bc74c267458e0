// Row normalisations (f32): RMSNorm (plain, or zero-centred (1+w) for Gemma / Qwen3-Next), LayerNorm, L2.
// They follow HF's float32 order: x·rsqrt(mean(x²)+eps), then ·w (or ·(1+w)).
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

export interface RmsNormOptions {
  /** Multiply by (1 + w) instead of w (Gemma, Qwen3-Next zero-centred RMSNorm). */
  addOne?: boolean;
  /** Floats between consecutive rows of x and y (default dim); per-head norms of [T, H, dim] pass T·H rows. */
  stride?: number;
}

function checkEps(kernel: string, eps: number): void {
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new KernelError(kernel, `eps must be ≥ 0, got ${eps}`);
}

function rowsSpan(rows: number, dim: number, stride: number): number {
  return rows === 0 ? 0 : ((rows - 1) * stride + dim) * 4;
}

/** y = x / sqrt(mean(x²) + eps) · w over `T` rows of `dim`; w = 0: no weight. y may equal x. */
export function rmsNorm(k: K, y: number, x: number, w: number, T: number, dim: number, eps: number, opts: RmsNormOptions = {}): void {
  checkInt('rmsNorm', 'T', T, 0);
  checkInt('rmsNorm', 'dim', dim);
  checkEps('rmsNorm', eps);
  const stride = opts.stride ?? dim;
  checkInt('rmsNorm', 'stride', stride, dim);
  checkBuf(k, 'rmsNorm', 'y', y, rowsSpan(T, dim, stride));
  checkBuf(k, 'rmsNorm', 'x', x, rowsSpan(T, dim, stride));
  if (w !== 0) checkBuf(k, 'rmsNorm', 'w', w, dim * 4);
  k.exports.rmsNormF32(y, x, w, T, dim, eps, opts.addOne ? 1 : 0, stride);
}

/** torch.nn.LayerNorm over `T` rows of `dim` (biased variance); w, b = 0 mean none. */
export function layerNorm(k: K, y: number, x: number, w: number, b: number, T: number, dim: number, eps: number): void {
  checkInt('layerNorm', 'T', T, 0);
  checkInt('layerNorm', 'dim', dim);
  checkEps('layerNorm', eps);
  checkBuf(k, 'layerNorm', 'y', y, T * dim * 4);
  checkBuf(k, 'layerNorm', 'x', x, T * dim * 4);
  if (w !== 0) checkBuf(k, 'layerNorm', 'w', w, dim * 4);
  if (b !== 0) checkBuf(k, 'layerNorm', 'b', b, dim * 4);
  k.exports.layerNormF32(y, x, w, b, T, dim, eps);
}

/** y = x · rsqrt(Σx² + eps) per row (Qwen3-Next / FLA `l2norm`, eps 1e-6 there). */
export function l2Norm(k: K, y: number, x: number, rows: number, dim: number, eps: number, opts: { stride?: number } = {}): void {
  checkInt('l2Norm', 'rows', rows, 0);
  checkInt('l2Norm', 'dim', dim);
  checkEps('l2Norm', eps);
  const stride = opts.stride ?? dim;
  checkInt('l2Norm', 'stride', stride, dim);
  checkBuf(k, 'l2Norm', 'y', y, rowsSpan(rows, dim, stride));
  checkBuf(k, 'l2Norm', 'x', x, rowsSpan(rows, dim, stride));
  k.exports.l2NormF32(y, x, rows, dim, eps, stride);
}
