// Naive reference: HF's zero-padded depthwise causal Conv1d (groups = C, padding W−1, first T outputs),
// with the state's W−1 inputs standing in for the zero padding.

export function conv1dRef(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, state: ArrayLike<number> | null, T: number, C: number, W: number, act: 'none' | 'silu'): { y: Float64Array; state: Float64Array } {
  const K = W - 1;
  const y = new Float64Array(T * C);
  const input = (t: number, c: number): number => (t >= 0 ? x[t * C + c] : state ? state[c * K + (K + t)] : 0);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) {
      let s = bias ? bias[c] : 0;
      for (let j = 0; j < W; j++) s += w[c * W + j] * input(t - K + j, c);
      y[t * C + c] = act === 'silu' ? s / (1 + Math.exp(-s)) : s;
    }
  }
  const ns = new Float64Array(C * K);
  for (let c = 0; c < C; c++) for (let j = 0; j < K; j++) ns[c * K + j] = input(T - K + j, c);
  return { y, state: ns };
}
