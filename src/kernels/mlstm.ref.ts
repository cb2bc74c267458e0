// Naive float64 references of the mLSTM kernels (./mlstm.ts). The recurrence is computed in its
// parallel form, from the unrolled definition rather than step by step: with b_t = Σ_{l≤t} log σ(f_l)
// and the incoming state (C₀, n₀, m₀) standing for exp(m₀)·C₀, token t sees
//   w₀ = m₀ + b_t (the incoming state), w_j = i_j + b_t − b_j (token j ≤ t),  m_t = max(w₀, max_j w_j)
//   C_t = exp(w₀ − m_t) C₀ + Σ_j exp(w_j − m_t) k_j v_jᵀ   (n_t likewise with k_j)
//   h_t = q̃ᵀC_t / (max(|q̃·n_t|, exp(−m_t)) + eps),  q̃ = q · dk^−½
// which equals the stabilised recurrence of HF mlstm_recurrent_step_native.

export interface MlstmRefInput {
  q: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  i: ArrayLike<number>;
  f: ArrayLike<number>;
  /** [C (H·dk·dv) | n (H·dk) | m (H)] */
  S: ArrayLike<number>;
}

export function mlstmRef(x: MlstmRefInput, T: number, H: number, dk: number, dv: number, eps: number): { y: Float64Array; S: Float64Array } {
  const y = new Float64Array(T * H * dv);
  const out = new Float64Array(H * (dk * dv + dk + 1));
  const logSig = (z: number) => -Math.log(1 + Math.exp(-z));
  const scale = 1 / Math.sqrt(dk);
  for (let h = 0; h < H; h++) {
    const m0 = x.S[H * (dk * dv + dk) + h];
    const b = new Float64Array(T + 1);
    for (let t = 0; t < T; t++) b[t + 1] = b[t] + logSig(x.f[t * H + h]);
    let C = new Float64Array(dk * dv), n = new Float64Array(dk), m = m0;
    for (let t = 0; t < T; t++) {
      const w0 = m0 + b[t + 1];
      m = w0;
      for (let j = 0; j <= t; j++) m = Math.max(m, x.i[j * H + h] + b[t + 1] - b[j + 1]);
      C = new Float64Array(dk * dv);
      n = new Float64Array(dk);
      const e0 = Math.exp(w0 - m);
      for (let a = 0; a < dk; a++) {
        n[a] = e0 * x.S[H * dk * dv + h * dk + a];
        for (let c = 0; c < dv; c++) C[a * dv + c] = e0 * x.S[h * dk * dv + a * dv + c];
      }
      for (let j = 0; j <= t; j++) {
        const e = Math.exp(x.i[j * H + h] + b[t + 1] - b[j + 1] - m);
        const kb = (j * H + h) * dk, vb = (j * H + h) * dv;
        for (let a = 0; a < dk; a++) {
          n[a] += e * x.k[kb + a];
          for (let c = 0; c < dv; c++) C[a * dv + c] += e * x.k[kb + a] * x.v[vb + c];
        }
      }
      const qb = (t * H + h) * dk;
      let qn = 0;
      for (let a = 0; a < dk; a++) qn += x.q[qb + a] * scale * n[a];
      const den = Math.max(Math.abs(qn), Math.exp(-m)) + eps;
      for (let c = 0; c < dv; c++) {
        let s = 0;
        for (let a = 0; a < dk; a++) s += x.q[qb + a] * scale * C[a * dv + c];
        y[(t * H + h) * dv + c] = s / den;
      }
    }
    if (T === 0) {
      for (let a = 0; a < dk * dv; a++) C[a] = x.S[h * dk * dv + a];
      for (let a = 0; a < dk; a++) n[a] = x.S[H * dk * dv + h * dk + a];
    }
    out.set(C, h * dk * dv);
    out.set(n, H * dk * dv + h * dk);
    out[H * (dk * dv + dk) + h] = m;
  }
  return { y, S: out };
}

/** y = σ(o) ⊙ (LayerNorm_h(y)·w + b), per row and head of dv values (biased variance). */
export function mlstmOutputRef(y: ArrayLike<number>, o: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, rows: number, H: number, dv: number, eps: number): Float64Array {
  const out = new Float64Array(rows * H * dv);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < H; h++) {
      const base = (r * H + h) * dv;
      let mean = 0;
      for (let j = 0; j < dv; j++) mean += y[base + j] / dv;
      let vr = 0;
      for (let j = 0; j < dv; j++) vr += (y[base + j] - mean) ** 2 / dv;
      for (let j = 0; j < dv; j++) {
        const c = h * dv + j;
        out[base + j] = ((y[base + j] - mean) / Math.sqrt(vr + eps) * w[c] + (b ? b[c] : 0)) / (1 + Math.exp(-o[base + j]));
      }
    }
  }
  return out;
}
