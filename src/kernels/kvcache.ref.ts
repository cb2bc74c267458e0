// Naive references for quantized KV cache rows (kvcache.ts): each head zero-padded to whole
// 32-blocks and quantized with the reference quantizers of formats/dtype.ts, and the inverse.

import { dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0 } from '../formats/dtype';
import { kvHeadBytes, kvRowBytes } from './kvcache';

/** rows × [heads, D] f32 values → rows cache rows of kvRowBytes bytes each. */
export function quantizeKvRowsRef(type: 'q8_0' | 'q4_0', src: ArrayLike<number>, rows: number, heads: number, D: number): Uint8Array {
  const hb = kvHeadBytes(type, D), rb = kvRowBytes(type, heads, D), Dp = Math.ceil(D / 32) * 32;
  const out = new Uint8Array(rows * rb);
  const head = new Float32Array(Dp);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      head.fill(0);
      for (let i = 0; i < D; i++) head[i] = src[(r * heads + h) * D + i];
      out.set(type === 'q8_0' ? quantizeQ8_0(head, 1, Dp) : quantizeQ4_0(head, 1, Dp), r * rb + h * hb);
    }
  }
  return out;
}

/** The values cache rows hold: rows × [heads, D] f32 (rows rowBytes apart, default kvRowBytes). */
export function dequantKvRowsRef(type: 'q8_0' | 'q4_0', bytes: Uint8Array, rows: number, heads: number, D: number, rowBytes = kvRowBytes(type, heads, D)): Float32Array {
  const hb = kvHeadBytes(type, D), Dp = Math.ceil(D / 32) * 32;
  const out = new Float32Array(rows * heads * D);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const blk = bytes.subarray(r * rowBytes + h * hb, r * rowBytes + (h + 1) * hb);
      const v = type === 'q8_0' ? dequantizeQ8_0(blk, Dp) : dequantizeQ4_0(blk, Dp);
      out.set(v.subarray(0, D), (r * heads + h) * D);
    }
  }
  return out;
}
