// Naive float64 references: the per-token recurrences of HF MambaMixer.slow_forward and of the
// Mamba2Mixer decode step, applied to every token in turn.

/** Mamba-1. x, delta, z [T, dI]; A [dI, N]; B, C [T, N]; D [dI]; h0 [dI, N]. */
export function selectiveScanRef(x: ArrayLike<number>, delta: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, C: ArrayLike<number>, D: ArrayLike<number>, z: ArrayLike<number> | null, h0: ArrayLike<number>, T: number, dI: number, N: number): { y: Float64Array; h: Float64Array } {
  const h = Float64Array.from(h0);
  const y = new Float64Array(T * dI);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < dI; c++) {
      const dt = delta[t * dI + c], xv = x[t * dI + c];
      let s = 0;
      for (let n = 0; n < N; n++) {
        const i = c * N + n;
        h[i] = Math.exp(A[i] * dt) * h[i] + dt * B[t * N + n] * xv;
        s += h[i] * C[t * N + n];
      }
      let out = s + xv * D[c];
      if (z) {
        const zv = z[t * dI + c];
        out *= zv / (1 + Math.exp(-zv));
      }
      y[t * dI + c] = out;
    }
  }
  return { y, h };
}

/** Mamba-2. x [T, H, P]; dt [T, H]; A, D [H]; B, C [T, G, N]; h0 [H, P, N]. */
export function ssdScanRef(x: ArrayLike<number>, dt: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, C: ArrayLike<number>, D: ArrayLike<number> | null, h0: ArrayLike<number>, T: number, H: number, P: number, G: number, N: number): { y: Float64Array; h: Float64Array } {
  const h = Float64Array.from(h0);
  const y = new Float64Array(T * H * P);
  for (let t = 0; t < T; t++) {
    for (let hh = 0; hh < H; hh++) {
      const g = Math.floor(hh / (H / G));
      const d = dt[t * H + hh];
      const dA = Math.exp(d * A[hh]);
      for (let p = 0; p < P; p++) {
        const xv = x[(t * H + hh) * P + p];
        let s = 0;
        for (let n = 0; n < N; n++) {
          const i = (hh * P + p) * N + n;
          h[i] = h[i] * dA + d * B[(t * G + g) * N + n] * xv;
          s += h[i] * C[(t * G + g) * N + n];
        }
        y[(t * H + hh) * P + p] = s + (D ? D[hh] * xv : 0);
      }
    }
  }
  return { y, h };
}
