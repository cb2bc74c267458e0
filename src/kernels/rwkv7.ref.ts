// Naive float64 references of the RWKV-7 kernels (./rwkv7.ts), written the way the official numpy
// model (RWKV-LM RWKV-v7/rwkv_v7_numpy.py) states them, token by token, on the state [H, dv, dk]
// (value rows) — the transpose of the kernel's [H, dk, dv]: the references take and return the
// kernel's layout and transpose at the edges.

export interface Wkv7RefInput {
  r: ArrayLike<number>;
  /** Log-decay: the decay is exp(w). */
  w: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  /** κ̂ */
  kappa: ArrayLike<number>;
  a: ArrayLike<number>;
  /** [H, dk, dv] */
  S: ArrayLike<number>;
}

/** Per head: S ← S·Diag(exp w) − (S κ̂)(κ̂ ⊙ a)ᵀ + v kᵀ;  y = S r  (S [dv, dk]). */
export function wkv7Ref(x: Wkv7RefInput, T: number, H: number, dk: number, dv: number): { y: Float64Array; S: Float64Array } {
  const S = new Float64Array(H * dv * dk);
  for (let h = 0; h < H; h++) for (let i = 0; i < dk; i++) for (let j = 0; j < dv; j++) S[(h * dv + j) * dk + i] = x.S[(h * dk + i) * dv + j];
  const y = new Float64Array(T * H * dv);
  const sk = new Float64Array(dv);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const kb = (t * H + h) * dk, vb = (t * H + h) * dv;
      for (let j = 0; j < dv; j++) {
        let s = 0;
        for (let i = 0; i < dk; i++) s += S[(h * dv + j) * dk + i] * x.kappa[kb + i];
        sk[j] = s;
      }
      for (let j = 0; j < dv; j++) {
        let o = 0;
        for (let i = 0; i < dk; i++) {
          const p = (h * dv + j) * dk + i;
          S[p] = S[p] * Math.exp(x.w[kb + i]) - sk[j] * x.kappa[kb + i] * x.a[kb + i] + x.v[vb + j] * x.k[kb + i];
          o += S[p] * x.r[kb + i];
        }
        y[vb + j] = o;
      }
    }
  }
  const out = new Float64Array(H * dk * dv);
  for (let h = 0; h < H; h++) for (let i = 0; i < dk; i++) for (let j = 0; j < dv; j++) out[(h * dk + i) * dv + j] = S[(h * dv + j) * dk + i];
  return { y, S: out };
}

/** κ̂ = normalize(k ⊙ k_k) per head ('add': /√(Σκ² + eps), 'clamp': / max(‖κ‖, eps)); k ← k + k(a − 1)k_a. */
export function rwkv7KeysRef(k: ArrayLike<number>, a: ArrayLike<number>, kK: ArrayLike<number>, kA: ArrayLike<number>, rows: number, H: number, dk: number,
  norm: { mode: 'add' | 'clamp'; eps: number }): { kappa: Float64Array; k: Float64Array } {
  const C = H * dk;
  const kappa = new Float64Array(rows * C), kOut = new Float64Array(rows * C);
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < H; h++) {
      let n2 = 0;
      for (let i = 0; i < dk; i++) {
        const c = h * dk + i, x = k[t * C + c] * kK[c];
        kappa[t * C + c] = x;
        n2 += x * x;
      }
      const d = norm.mode === 'add' ? Math.sqrt(n2 + norm.eps) : Math.max(Math.sqrt(n2), norm.eps);
      for (let i = 0; i < dk; i++) {
        const c = h * dk + i, p = t * C + c;
        kappa[p] /= d;
        kOut[p] = k[p] + k[p] * (a[p] - 1) * kA[c];
      }
    }
  }
  return { kappa, k: kOut };
}

/** y = (GroupNorm_h(y)·gw + gb + (Σ r k rK)·v) ⊙ g, per row and head. */
export function rwkv7OutputRef(y: ArrayLike<number>, r: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, g: ArrayLike<number>,
  rK: ArrayLike<number>, gw: ArrayLike<number>, gb: ArrayLike<number>, rows: number, H: number, dk: number, dv: number, eps: number): Float64Array {
  const out = new Float64Array(rows * H * dv);
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < H; h++) {
      let bonus = 0;
      for (let i = 0; i < dk; i++) {
        const p = t * H * dk + h * dk + i;
        bonus += r[p] * k[p] * rK[h * dk + i];
      }
      const base = t * H * dv + h * dv;
      let mean = 0;
      for (let j = 0; j < dv; j++) mean += y[base + j];
      mean /= dv;
      let vr = 0;
      for (let j = 0; j < dv; j++) vr += (y[base + j] - mean) ** 2;
      const inv = 1 / Math.sqrt(vr / dv + eps);
      for (let j = 0; j < dv; j++) {
        const c = h * dv + j;
        out[base + j] = ((y[base + j] - mean) * inv * gw[c] + gb[c] + bonus * v[base + j]) * g[base + j];
      }
    }
  }
  return out;
}
