// Naive references for the matmul group: obviously right, slow, float64 accumulation.
// Tests compare the WASM kernels against these on fresh random data.
import type { WeightDType } from './types';

/** Y[b, r] = Σ_c W[r, c] · X[b, c] with W given dequantized [rows, cols], summed in float64. */
export function matmulRef(x: ArrayLike<number>, w: ArrayLike<number>, batch: number, rows: number, cols: number): Float32Array {
  const y = new Float32Array(batch * rows);
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[b * cols + c];
      y[b * rows + r] = s;
    }
  }
  return y;
}

/** IEEE half → number, from the definition: (−1)^s · 2^(e−15) · (1 + m/1024), subnormals m · 2^−24. */
export function f16ToF32Ref(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function bf16ToF32Ref(h: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setUint32(0, h << 16);
  return b.getFloat32(0);
}

/** Round half to even of a non-negative float64. */
function rne(v: number): number {
  const f = Math.floor(v), r = v - f;
  if (r > 0.5) return f + 1;
  if (r < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** number (taken as f32) → IEEE half bits, round to nearest even; NaN → 0x7e00. */
export function f32ToF16Ref(f: number): number {
  const v = Math.fround(f);
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | rne(a * 2 ** 24);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const m = rne((a / 2 ** e) * 1024); // 1024 … 2048; 2048 carries into the exponent below
  return sign | (((e + 15) << 10) + m - 1024);
}

/** C roundf: nearest integer, ties away from zero. */
function roundAway(v: number): number {
  return Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
}

/** ggml quantize_row_q8_0_ref for src [rows, cols]: per block d = amax/127, q = roundf(x/d). */
export function quantizeQ8_0Ref(src: Float32Array, rows: number, cols: number): Uint8Array {
  const nb = (rows * cols) / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(src[i * 32 + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(i * 34, f32ToF16Ref(d), true);
    for (let j = 0; j < 32; j++) dv.setInt8(i * 34 + 2 + j, roundAway(Math.fround(src[i * 32 + j] * id)));
  }
  return out;
}

/** ggml quantize_row_q4_0_ref: d = (first element of largest |x|)/−8, q = min(15, trunc(x/d + 8.5)). */
export function quantizeQ4_0Ref(src: Float32Array, rows: number, cols: number): Uint8Array {
  const nb = (rows * cols) / 32;
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = src[i * 32 + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(i * 18, f32ToF16Ref(d), true);
    const q = (v: number) => Math.min(15, Math.trunc(Math.fround(Math.fround(v * id) + 8.5)));
    for (let j = 0; j < 16; j++) out[i * 18 + 2 + j] = q(src[i * 32 + j]) | (q(src[i * 32 + 16 + j]) << 4);
  }
  return out;
}

/** Weight bytes [rows, cols] of any dtype → float64 values (q8_0: q·d, q4_0: (q − 8)·d). */
export function dequantRef(dtype: WeightDType, bytes: Uint8Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < rows * cols; i++) {
    switch (dtype) {
      case 'f32': out[i] = dv.getFloat32(i * 4, true); break;
      case 'f16': out[i] = f16ToF32Ref(dv.getUint16(i * 2, true)); break;
      case 'bf16': out[i] = bf16ToF32Ref(dv.getUint16(i * 2, true)); break;
      case 'q8_0': {
        const blk = Math.floor(i / 32) * 34;
        out[i] = f16ToF32Ref(dv.getUint16(blk, true)) * dv.getInt8(blk + 2 + (i % 32));
        break;
      }
      case 'q4_0': {
        const blk = Math.floor(i / 32) * 18, j = i % 32;
        const byte = bytes[blk + 2 + (j % 16)];
        out[i] = f16ToF32Ref(dv.getUint16(blk, true)) * ((j < 16 ? byte & 15 : byte >> 4) - 8);
        break;
      }
    }
  }
  return out;
}

/**
 * The activation quantization of the integer matmul path: per 32-block of each X row,
 * d = amax/127 (f32), q = roundf(x/d). q [batch, cols], d and Σq [batch, cols/32].
 */
export function quantizeActRef(x: Float32Array, batch: number, cols: number): { q: Int8Array; d: Float32Array; s: Int32Array } {
  const nb = cols / 32;
  const q = new Int8Array(batch * cols), d = new Float32Array(batch * nb), s = new Int32Array(batch * nb);
  for (let b = 0; b < batch; b++) {
    for (let k = 0; k < nb; k++) {
      const o = b * cols + k * 32;
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]));
      const dd = Math.fround(amax / 127);
      const id = dd ? Math.fround(1 / dd) : 0;
      d[b * nb + k] = dd;
      for (let j = 0; j < 32; j++) {
        q[o + j] = roundAway(Math.fround(x[o + j] * id));
        s[b * nb + k] += q[o + j];
      }
    }
  }
  return { q, d, s };
}

/** X as the integer path sees it: q·d per element, float64. */
export function dequantActRef(a: { q: Int8Array; d: Float32Array }, batch: number, cols: number): Float64Array {
  const nb = cols / 32;
  const out = new Float64Array(batch * cols);
  for (let b = 0; b < batch; b++) for (let c = 0; c < cols; c++) out[b * cols + c] = a.q[b * cols + c] * a.d[b * nb + (c >> 5)];
  return out;
}
