// Dense f32 matrix-vector / small-batch matrix-matrix product.
// W is row-major [rows, cols] (HF Linear layout: out x in); X is [batch, cols]; Y is [batch, rows].
// Y[b, r] = sum_c W[r, c] * X[b, c]

@inline function dotF32(w: usize, x: usize, cols: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let c = 0;
  for (; c + 16 <= cols; c += 16) {
    const o = <usize>c << 2;
    if (ASC_FEATURE_RELAXED_SIMD) {
      a0 = f32x4.relaxed_madd(v128.load(w + o), v128.load(x + o), a0);
      a1 = f32x4.relaxed_madd(v128.load(w + o, 16), v128.load(x + o, 16), a1);
      a2 = f32x4.relaxed_madd(v128.load(w + o, 32), v128.load(x + o, 32), a2);
      a3 = f32x4.relaxed_madd(v128.load(w + o, 48), v128.load(x + o, 48), a3);
    } else {
      a0 = f32x4.add(a0, f32x4.mul(v128.load(w + o), v128.load(x + o)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(w + o, 16), v128.load(x + o, 16)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(w + o, 32), v128.load(x + o, 32)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(w + o, 48), v128.load(x + o, 48)));
    }
  }
  for (; c + 4 <= cols; c += 4) {
    const o = <usize>c << 2;
    a0 = f32x4.add(a0, f32x4.mul(v128.load(w + o), v128.load(x + o)));
  }
  const s = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
  let acc = f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
  for (; c < cols; c++) acc += load<f32>(w + (<usize>c << 2)) * load<f32>(x + (<usize>c << 2));
  return acc;
}

/** Rows [r0, r1) of Y = X·Wᵀ for f32 weights. The row range lets a worker pool split the rows. */
export function matmulF32(y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const rowBytes = <usize>cols << 2;
  for (let r = r0; r < r1; r++) {
    const wr = w + <usize>r * rowBytes;
    for (let b = 0; b < batch; b++) {
      store<f32>(y + ((<usize>b * rows + r) << 2), dotF32(wr, x + <usize>b * rowBytes, cols));
    }
  }
}
