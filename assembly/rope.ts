// Rotary position embedding, in place on the first 2·half dims of every head.
// Angles follow HF's float32 path: freqs = fl32(pos · invFreq), cos/sin of that f32 value (here in
// f64, then rounded), times attention_scaling in f32; then q·cos + rotate_half(q)·sin in f32.

/**
 * x: rows of T tokens `rowStride` floats apart, heads `headStride` apart inside a row.
 * positions: i32[T]; invFreq: f32[half]. interleaved = 0: NeoX / HF rotate_half pairs (i, i + half);
 * 1: GPT-J pairs (2i, 2i + 1).
 */
export function ropeF32(x: usize, T: i32, nHeads: i32, positions: usize, invFreq: usize, half: i32, interleaved: i32, attnFactor: f32, headStride: i32, rowStride: i32): void {
  for (let t = 0; t < T; t++) {
    const pos = <f32>load<i32>(positions + (<usize>t << 2));
    const row = x + ((<usize>t * <usize>rowStride) << 2);
    for (let i = 0; i < half; i++) {
      const ang: f32 = pos * load<f32>(invFreq + (<usize>i << 2));
      const c: f32 = <f32>Math.cos(<f64>ang) * attnFactor;
      const s: f32 = <f32>Math.sin(<f64>ang) * attnFactor;
      const a = <usize>(interleaved ? 2 * i : i) << 2;
      const b = <usize>(interleaved ? 2 * i + 1 : i + half) << 2;
      for (let h = 0; h < nHeads; h++) {
        const p = row + ((<usize>h * <usize>headStride) << 2);
        const x1 = load<f32>(p + a), x2 = load<f32>(p + b);
        store<f32>(p + a, x1 * c - x2 * s);
        store<f32>(p + b, x2 * c + x1 * s);
      }
    }
  }
}
