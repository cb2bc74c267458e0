// Naive float64 references: the per-token recurrences exactly as HF writes them
// (torch_recurrent_gated_delta_rule; MiniMaxLightningAttention's decode loop), one token at a time.

export interface LinearAttentionRefOptions {
  T: number;
  H: number;
  dk: number;
  dv: number;
  decay: 'none' | 'scalar' | 'vector';
  /** [T, H] (scalar) or [T, H, dk] (vector) log-decay. */
  g?: ArrayLike<number>;
  /** [T, H]: delta rule. */
  beta?: ArrayLike<number>;
  scale: number;
  /** Incoming normalizer state [H, dk]; given (even zeros) turns the normalizer on. */
  z?: ArrayLike<number>;
}

/** q, k [T, H, dk]; v [T, H, dv]; S [H, dk, dv] incoming state. Returns o [T, H, dv] and the final S (and z). */
export function linearAttentionRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, S0: ArrayLike<number>, o: LinearAttentionRefOptions): { o: Float64Array; S: Float64Array; z: Float64Array | null } {
  const { T, H, dk, dv, scale } = o;
  const S = Float64Array.from(S0);
  const z = o.z ? Float64Array.from(o.z) : null;
  const out = new Float64Array(T * H * dv);
  const u = new Float64Array(dv);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * dk, vo = (t * H + h) * dv, so = h * dk * dv;
      // S ← exp(g)·S, row-wise for per-channel gates.
      for (let i = 0; i < dk; i++) {
        const e = o.decay === 'scalar' ? Math.exp(o.g![t * H + h]) : o.decay === 'vector' ? Math.exp(o.g![qo + i]) : 1;
        for (let j = 0; j < dv; j++) S[so + i * dv + j] *= e;
        if (z) z[h * dk + i] = z[h * dk + i] * e + k[qo + i];
      }
      if (o.beta) {
        const b = o.beta[t * H + h];
        u.fill(0);
        for (let i = 0; i < dk; i++) for (let j = 0; j < dv; j++) u[j] += S[so + i * dv + j] * k[qo + i];
        for (let j = 0; j < dv; j++) u[j] = (v[vo + j] - u[j]) * b;
      } else {
        for (let j = 0; j < dv; j++) u[j] = v[vo + j];
      }
      for (let i = 0; i < dk; i++) for (let j = 0; j < dv; j++) S[so + i * dv + j] += k[qo + i] * u[j];
      let den = 1;
      if (z) {
        den = 1e-10;
        for (let i = 0; i < dk; i++) den += q[qo + i] * scale * z[h * dk + i];
      }
      for (let j = 0; j < dv; j++) {
        let s = 0;
        for (let i = 0; i < dk; i++) s += S[so + i * dv + j] * q[qo + i] * scale;
        out[vo + j] = s / den;
      }
    }
  }
  return { o: out, S, z };
}

/** MiniMax decode loop: S ← exp(−s_h)·S + kᵀv; o = qS. q, k, v [T, H, d]; S [H, d, d]; slopes [H]. */
export function lightningRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, S0: ArrayLike<number>, slopes: ArrayLike<number>, T: number, H: number, d: number): { o: Float64Array; S: Float64Array } {
  const S = Float64Array.from(S0);
  const out = new Float64Array(T * H * d);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const r = Math.exp(-slopes[h]);
      const b = (t * H + h) * d, so = h * d * d;
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) S[so + i * d + j] = r * S[so + i * d + j] + k[b + i] * v[b + j];
      for (let j = 0; j < d; j++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += q[b + i] * S[so + i * d + j];
        out[b + j] = s;
      }
    }
  }
  return { o: out, S };
}

/** HF MiniMaxLightningAttention.get_slope_rate for layer l of L: (2^(−8/H))^(h+1) · (1 − l/(L−1+1e−5) + 1e−5). */
export function lightningSlopes(H: number, layer: number, layers: number): Float64Array {
  const base = 1 / 2 ** (8 / H);
  const factor = 1 - layer / (layers - 1 + 1e-5) + 1e-5;
  return Float64Array.from({ length: H }, (_, h) => base ** (h + 1) * factor);
}
