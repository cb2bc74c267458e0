// Naive references of the ternary (BitNet b1.58) kernels, written from the definitions: per-row
// absmax int8 quantization of the activations and the ternary product over unpacked weights.

const f = Math.fround;

/** Round half to even of a finite number. */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * transformers' per-token activation quantization in f32: s = 127 / max(max|x|, 1e-5),
 * q = clamp(round-half-even(x·s), −128, 127). Returns q [batch, cols] and s per row.
 */
export function quantizeActTernaryRef(x: ArrayLike<number>, batch: number, cols: number): { q: Int8Array; s: Float32Array } {
  const q = new Int8Array(batch * cols), s = new Float32Array(batch);
  for (let b = 0; b < batch; b++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(x[b * cols + c]));
    const sb = f(127 / Math.max(m, f(1e-5)));
    s[b] = sb;
    for (let c = 0; c < cols; c++) q[b * cols + c] = Math.min(127, Math.max(-128, roundHalfEven(f(x[b * cols + c] * sb))));
  }
  return { q, s };
}

/**
 * y[b, r] = f32(Σ_c q[b, c]·t[r, c]) · f32(f32(1/s_b) · scale), the sum in exact integers; t unpacked
 * [rows, cols].
 */
export function ternaryMatmulRef(x: ArrayLike<number>, t: ArrayLike<number>, scale: number, batch: number, rows: number, cols: number): Float32Array {
  const { q, s } = quantizeActTernaryRef(x, batch, cols);
  const y = new Float32Array(batch * rows);
  for (let b = 0; b < batch; b++) {
    const a = f(f(1 / s[b]) * f(scale));
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += q[b * cols + c] * t[r * cols + c];
      y[b * rows + r] = f(f(sum) * a);
    }
  }
  return y;
}

/**
 * transformers' online weight quantization (AutoBitLinear with quantization_mode 'online'): in f32,
 * s = 1 / max(mean|W|, 1e-5), t = clamp(round-half-even(W·s), −1, 1); the product's scale is 1/s.
 * The mean is the f32 rounding of the exact mean.
 */
export function ternarizeRef(w: ArrayLike<number>): { t: Int8Array; scale: number } {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += Math.abs(w[i]);
  const mean = f(Math.max(f(sum / w.length), f(1e-5)));
  const s = f(1 / mean);
  const t = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) t[i] = Math.min(1, Math.max(-1, roundHalfEven(f(w[i] * s))));
  return { t, scale: f(1 / s) };
}
