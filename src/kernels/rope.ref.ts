// Naive reference for RoPE: HF `q·cos + rotate_half(q)·sin` with angles fl32(pos·invFreq) (as HF's
// float32 matmul makes them) and cos/sin in f64.

export function ropeRef(x: ArrayLike<number>, T: number, nHeads: number, headDim: number, positions: ArrayLike<number>, invFreq: ArrayLike<number>, rotaryDim: number, style: 'neox' | 'interleaved', attentionFactor = 1, headStride = headDim, rowStride = nHeads * headStride): Float64Array {
  const y = Float64Array.from(x as ArrayLike<number>);
  const half = rotaryDim / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const base = t * rowStride + h * headStride;
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(positions[t] * invFreq[i]);
        const c = Math.cos(ang) * attentionFactor, s = Math.sin(ang) * attentionFactor;
        const a = base + (style === 'neox' ? i : 2 * i), b = base + (style === 'neox' ? i + half : 2 * i + 1);
        const x1 = x[a], x2 = x[b];
        y[a] = x1 * c - x2 * s;
        y[b] = x2 * c + x1 * s;
      }
    }
  }
  return y;
}
