// Naive float64 references: HF RecurrentGemmaRglru (+ _rnn_scan) and rwkv_linear_attention_cpu,
// token by token.

/** logA, x [T, W]; reset[t] true where position 0; h0 [W]. */
export function rglruRef(logA: ArrayLike<number>, x: ArrayLike<number>, reset: ArrayLike<number> | null, h0: ArrayLike<number>, T: number, W: number): { y: Float64Array; h: Float64Array } {
  const h = Float64Array.from(h0);
  const y = new Float64Array(T * W);
  for (let t = 0; t < T; t++) {
    const r = reset ? reset[t] !== 0 : false;
    for (let w = 0; w < W; w++) {
      const la = logA[t * W + w];
      const a = r ? 0 : Math.exp(la);
      const m = r ? 1 : Math.sqrt(1 - Math.exp(2 * la));
      h[w] = a * h[w] + x[t * W + w] * m;
      y[t * W + w] = h[w];
    }
  }
  return { y, h };
}

/** key, value [T, C]; timeDecay, timeFirst [C]; state [3, C] = (num, den, max). */
export function wkv4Ref(key: ArrayLike<number>, value: ArrayLike<number>, timeDecay: ArrayLike<number>, timeFirst: ArrayLike<number>, state0: ArrayLike<number>, T: number, C: number): { out: Float64Array; state: Float64Array } {
  const s = Float64Array.from(state0);
  const out = new Float64Array(T * C);
  for (let c = 0; c < C; c++) {
    const w = -Math.exp(timeDecay[c]), u = timeFirst[c];
    let num = s[c], den = s[C + c], mx = s[2 * C + c];
    for (let t = 0; t < T; t++) {
      const k = key[t * C + c], v = value[t * C + c];
      let m = Math.max(mx, k + u);
      let e1 = Math.exp(mx - m), e2 = Math.exp(k + u - m);
      out[t * C + c] = (e1 * num + e2 * v) / (e1 * den + e2);
      m = Math.max(mx + w, k);
      e1 = Math.exp(mx + w - m);
      e2 = Math.exp(k - m);
      num = e1 * num + e2 * v;
      den = e1 * den + e2;
      mx = m;
    }
    s[c] = num; s[C + c] = den; s[2 * C + c] = mx;
  }
  return { out, state: s };
}
