// Quantized KV cache rows (assembly/kvcache.ts): the layout, and the kernel that writes rows.
// A cache row (one position) holds each of its `heads` heads of D values as ceil(D/32) GGUF blocks
// (Q8_0: 34 B, Q4_0: 18 B per 32 values; a head whose D is no multiple of 32 ends in a block padded
// with zeros), and the row is padded with zero bytes to a multiple of 4, so that a row is a whole
// number of 32-bit words (the unit of state regions, and of WebGPU's storage arrays).
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

/** Element type of attention KV caches: f32, or GGUF Q8_0 / Q4_0 blocks per head. */
export type KvCacheType = 'f32' | 'q8_0' | 'q4_0';
export const KV_CACHE_TYPES: readonly KvCacheType[] = ['f32', 'q8_0', 'q4_0'];

/** Largest head dimension attention reads from a quantized cache (a row of its staging tile, assembly/kvcache.ts STAGE_MAX). */
export const KV_QUANT_MAX_DIM = 1024;

/** Kernel type codes (assembly/kvcache.ts KV_Q8_0, KV_Q4_0). */
export const KV_CODE: Record<'q8_0' | 'q4_0', number> = { q8_0: 1, q4_0: 2 };

/** Bytes of one head of D values in a cache row of this type. */
export function kvHeadBytes(type: KvCacheType, D: number): number {
  if (type === 'f32') return D * 4;
  return Math.ceil(D / 32) * (type === 'q8_0' ? 34 : 18);
}

/** Bytes of one cache row (a position) of `heads` heads of D values, a multiple of 4. */
export function kvRowBytes(type: KvCacheType, heads: number, D: number): number {
  return Math.ceil((heads * kvHeadBytes(type, D)) / 4) * 4;
}

/**
 * Quantizes `rows` rows of src (f32, srcStride floats apart, `heads` heads of D values each) into
 * cache rows of dstStride bytes at dst (see the file header). Whole blocks are byte-identical to
 * quantizeRowsQ8_0 / quantizeRowsQ4_0 (ggml's reference rounding).
 */
export function quantizeKvRows(k: K, type: 'q8_0' | 'q4_0', dst: number, src: number, rows: number, heads: number, D: number,
  o: { srcStride?: number; dstStride?: number } = {}): void {
  const kernel = 'quantizeKvRows';
  if (type !== 'q8_0' && type !== 'q4_0') throw new KernelError(kernel, `type must be q8_0 or q4_0, got ${type}`);
  checkInt(kernel, 'rows', rows);
  checkInt(kernel, 'heads', heads);
  checkInt(kernel, 'D', D);
  const srcStride = o.srcStride ?? heads * D, dstStride = o.dstStride ?? kvRowBytes(type, heads, D);
  checkInt(kernel, 'srcStride', srcStride, heads * D);
  checkInt(kernel, 'dstStride', dstStride, heads * kvHeadBytes(type, D));
  checkBuf(k, kernel, 'src', src, ((rows - 1) * srcStride + heads * D) * 4);
  checkBuf(k, kernel, 'dst', dst, (rows - 1) * dstStride + heads * kvHeadBytes(type, D));
  k.exports.quantizeKvRows(dst, src, rows, heads, D, srcStride, dstStride, KV_CODE[type]);
}
