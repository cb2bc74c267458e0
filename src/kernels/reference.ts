// Naive references for every kernel: obviously right, slow, float64 accumulation.
// Tests compare the WASM kernels against these on fresh random data.

/** Y[b, r] = Σ_c W[r, c] · X[b, c] with W given dequantized as f32 [rows, cols]. */
export function matmulRef(x: Float32Array, w: Float32Array, batch: number, rows: number, cols: number): Float32Array {
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
