// Ternary weights × int8 activations (BitNet b1.58 BitLinear).
//
// Weight layout (packed, 2 bits a weight): each row is nb = ceil(cols / 64) blocks of 16 bytes;
// byte j of block k holds t[64k + j + 16i] + 1 ∈ {0, 1, 2} in bits 2i … 2i+1 (i = 0 … 3), so one
// 16-byte load gives four vectors of 16 consecutive weights with one shift and one mask each.
// Columns past `cols` hold t = 0.
//
// Activations: each X row is quantized to int8 with one absmax scale per row (transformers'
// BitLinear / ActQuant): s = 127 / max(max|x|, 1e-5) in f32, q = round-half-even(x·s) clamped to
// [−128, 127]. xq holds each row in ceil(cols / 64)·64 bytes (zero past cols), xs the row's Σq, xa
// 1/s in f32.
//
// Product: y[b, r] = f32(Σ_c q[b, c]·t[r, c]) · (xa[b] · scale), the integer sum exact. The weight
// side is t + 1 ∈ [0, 2] (the 7-bit operand of the relaxed dot), and Σ q·(t + 1) − Σq = Σ q·t.
// Lanes are only combined as exact integers, and the float step is the same instructions in every
// build, so the relaxed and baseline builds give bit-identical results, and a row's result does not
// depend on the other rows of its call.

const EPS: f32 = 1e-5;

@inline function hsum(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3);
}

/** Four blocks' i32x4 partials → [Σa, Σb, Σc, Σd]. */
@inline function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 1, 4, 5), i32x4.shuffle(a, b, 2, 3, 6, 7));
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 1, 4, 5), i32x4.shuffle(c, d, 2, 3, 6, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 2, 4, 6), i32x4.shuffle(ab, cd, 1, 3, 5, 7));
}

/** Bytes of one quantized X row (and of one packed weight row × 4). */
@inline function paddedCols(cols: i32): usize {
  return <usize>((cols + 63) >> 6) << 6;
}

/** Four lanes of round-half-even(x·s) as i32. */
@inline function q4(x: v128, s: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(x, s)));
}

/**
 * Per-row absmax int8 quantization of X [batch, cols] f32: xq int8 [batch, ceil(cols/64)·64]
 * (zero past cols), xs i32 [batch] = Σq, xa f32 [batch] = 1/s with s = 127 / max(max|x|, 1e-5).
 */
export function quantizeActTernary(xq: usize, xs: usize, xa: usize, x: usize, batch: i32, cols: i32): void {
  const cp = paddedCols(cols);
  const c16 = cols & ~15;
  for (let b = 0; b < batch; b++) {
    const src = x + (<usize>b * cols << 2), dst = xq + <usize>b * cp;
    let mv = f32x4.splat(0);
    let c = 0;
    for (; c + 4 <= cols; c += 4) mv = f32x4.max(mv, f32x4.abs(v128.load(src + (<usize>c << 2))));
    let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
    for (; c < cols; c++) m = max(m, abs(load<f32>(src + (<usize>c << 2))));
    m = max(m, EPS);
    const s: f32 = <f32>127 / m;
    const sv = f32x4.splat(s);
    let acc = i32x4.splat(0);
    for (c = 0; c < c16; c += 16) {
      const p = src + (<usize>c << 2);
      const a = q4(v128.load(p), sv), bq = q4(v128.load(p, 16), sv), cq = q4(v128.load(p, 32), sv), d = q4(v128.load(p, 48), sv);
      // Saturating narrows clamp to [−128, 127]; the sum is taken of the clamped values.
      const v = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(a, bq), i16x8.narrow_i32x4_s(cq, d));
      v128.store(dst + <usize>c, v);
      acc = i32x4.add(acc, i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(v)));
    }
    let sum = hsum(acc);
    for (; c < cols; c++) {
      // Saturating conversion (a NaN gives 0, as the vector path's does).
      let q = i32x4.extract_lane(q4(f32x4.splat(load<f32>(src + (<usize>c << 2))), sv), 0);
      q = min(max(q, -128), 127);
      store<i8>(dst + <usize>c, <i8>q);
      sum += q;
    }
    for (let e = <usize>cols; e < cp; e++) store<i8>(dst + e, 0);
    store<i32>(xs + (<usize>b << 2), sum);
    store<f32>(xa + (<usize>b << 2), <f32>1 / s);
  }
}

/** The four weight vectors (t + 1) of one packed 64-block: elements 0–15, 16–31, 32–47, 48–63. */
@inline function w0Of(v: v128): v128 { return v128.and(v, i8x16.splat(3)); }
@inline function w1Of(v: v128): v128 { return v128.and(i16x8.shr_u(v, 2), i8x16.splat(3)); }
@inline function w2Of(v: v128): v128 { return v128.and(i16x8.shr_u(v, 4), i8x16.splat(3)); }
@inline function w3Of(v: v128): v128 { return i8x16.shr_u(v, 6); }

/** Σ q·(t + 1) over 16 elements into acc: x the int8 activations, w the weights (t + 1 ∈ [0, 2]). */
@inline function dot16(x: v128, w: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, w, acc);
  // |q·(t + 1)| ≤ 256: the two products of a lane fit i16.
  return i32x4.add(acc, i32x4.extadd_pairwise_i16x8_s(i16x8.add(i16x8.extmul_low_i8x16_s(x, w), i16x8.extmul_high_i8x16_s(x, w))));
}

/** Σ over one 64-block of q·(t + 1) into acc: weights w0…w3, activations at x. */
@inline function block(w0: v128, w1: v128, w2: v128, w3: v128, x: usize, acc: v128): v128 {
  acc = dot16(v128.load(x), w0, acc);
  acc = dot16(v128.load(x, 16), w1, acc);
  acc = dot16(v128.load(x, 32), w2, acc);
  return dot16(v128.load(x, 48), w3, acc);
}

// Relaxed one-X-row paths: the weights of chunk i are taken in place, masked but not shifted
// (v & 3·4^i ∈ {0, 4^i, 2·4^i}, all 7-bit for i < 3, and v >> 6 for i = 3), into one accumulator per
// chunk; the chunk sums are 4^i times Σ q·(t + 1), divided out exactly at the end.

/** Σ_c q·t of one weight row (w) and one X row (x, its Σq in sx). */
@inline function dot1(w: usize, x: usize, nb: i32, sx: i32): i32 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
    for (let k = 0; k < nb; k++) {
      const v = v128.load(w + (<usize>k << 4)), xo = x + (<usize>k << 6);
      a0 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(xo), v128.and(v, i8x16.splat(3)), a0);
      a1 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(xo, 16), v128.and(v, i8x16.splat(12)), a1);
      a2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(xo, 32), v128.and(v, i8x16.splat(48)), a2);
      a3 = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(xo, 48), i8x16.shr_u(v, 6), a3);
    }
    // Lanes of the chunk sums need not be multiples of 4^i; their totals are.
    return (hsum(a0) + (hsum(a1) >> 2) + (hsum(a2) >> 4) + hsum(a3)) - sx;
  }
  let acc = i32x4.splat(0);
  for (let k = 0; k < nb; k++) {
    const v = v128.load(w + (<usize>k << 4));
    acc = block(w0Of(v), w1Of(v), w2Of(v), w3Of(v), x + (<usize>k << 6), acc);
  }
  return hsum(acc) - sx;
}

/** Two weight rows (wa, wb) × one X row: [Σ q·(t + 1)] of each, the activation loads shared. */
@inline function dot2(wa: usize, wb: usize, x: usize, nb: i32): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
    let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
    for (let k = 0; k < nb; k++) {
      const xo = x + (<usize>k << 6), o = <usize>k << 4;
      const va = v128.load(wa + o), vb = v128.load(wb + o);
      const x0 = v128.load(xo), x1 = v128.load(xo, 16), x2 = v128.load(xo, 32), x3 = v128.load(xo, 48);
      a0 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, v128.and(va, i8x16.splat(3)), a0);
      b0 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x0, v128.and(vb, i8x16.splat(3)), b0);
      a1 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, v128.and(va, i8x16.splat(12)), a1);
      b1 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x1, v128.and(vb, i8x16.splat(12)), b1);
      a2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x2, v128.and(va, i8x16.splat(48)), a2);
      b2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x2, v128.and(vb, i8x16.splat(48)), b2);
      a3 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x3, i8x16.shr_u(va, 6), a3);
      b3 = i32x4.relaxed_dot_i8x16_i7x16_add_s(x3, i8x16.shr_u(vb, 6), b3);
    }
    // Chunk totals as exact integers (hsum4 over [a_i, b_i, …]), then divided by 4^i.
    const t0 = hsum4(a0, b0, a0, b0), t1 = hsum4(a1, b1, a1, b1), t2 = hsum4(a2, b2, a2, b2), t3 = hsum4(a3, b3, a3, b3);
    return i32x4.add(i32x4.add(t0, i32x4.shr_s(t1, 2)), i32x4.add(i32x4.shr_s(t2, 4), t3));
  }
  let a = i32x4.splat(0), b = i32x4.splat(0);
  for (let k = 0; k < nb; k++) {
    const xo = x + (<usize>k << 6), o = <usize>k << 4;
    const va = v128.load(wa + o), vb = v128.load(wb + o);
    const x0 = v128.load(xo), x1 = v128.load(xo, 16), x2 = v128.load(xo, 32), x3 = v128.load(xo, 48);
    a = dot16(x3, w3Of(va), dot16(x2, w2Of(va), dot16(x1, w1Of(va), dot16(x0, w0Of(va), a))));
    b = dot16(x3, w3Of(vb), dot16(x2, w2Of(vb), dot16(x1, w1Of(vb), dot16(x0, w0Of(vb), b))));
  }
  return hsum4(a, b, a, b);
}

/**
 * One weight row × four X rows (xr, xr + cp, …): [Σ q·(t + 1)] per X row, each weight block unpacked
 * once for the four.
 */
@inline function dot4(w: usize, xr: usize, cp: usize, nb: i32): v128 {
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  const x1 = xr + cp, x2 = x1 + cp, x3 = x2 + cp;
  for (let k = 0; k < nb; k++) {
    const v = v128.load(w + (<usize>k << 4)), o = <usize>k << 6;
    const w0 = w0Of(v), w1 = w1Of(v), w2 = w2Of(v), w3 = w3Of(v);
    a0 = block(w0, w1, w2, w3, xr + o, a0);
    a1 = block(w0, w1, w2, w3, x1 + o, a1);
    a2 = block(w0, w1, w2, w3, x2 + o, a2);
    a3 = block(w0, w1, w2, w3, x3 + o, a3);
  }
  return hsum4(a0, a1, a2, a3);
}

/**
 * Rows [r0, r1) of Y [batch, rows] = (quantized X) · Tᵀ · (xa · scale): packed ternary weights w
 * [rows, ceil(cols/64)·16 bytes], X as quantizeActTernary(xq, xs, xa, …) gives it.
 */
export function matmulTernary(y: usize, xq: usize, xs: usize, xa: usize, w: usize, scale: f32, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const nb = (cols + 63) >> 6;
  const cp = <usize>nb << 6, wr = <usize>nb << 4, ys = <usize>rows << 2;
  const b4 = batch & ~3;
  const sv = f32x4.splat(scale);
  for (let b = 0; b < b4; b += 4) {
    const xr = xq + <usize>b * cp, bo = <usize>b << 2;
    const f = f32x4.mul(v128.load(xa + bo), sv);
    const sx = v128.load(xs + bo);
    for (let r = r0; r < r1; r++) {
      const t = i32x4.sub(dot4(w + <usize>r * wr, xr, cp, nb), sx);
      const v = f32x4.mul(f32x4.convert_i32x4_s(t), f);
      const o = y + <usize>b * ys + (<usize>r << 2);
      store<f32>(o, f32x4.extract_lane(v, 0));
      store<f32>(o + ys, f32x4.extract_lane(v, 1));
      store<f32>(o + 2 * ys, f32x4.extract_lane(v, 2));
      store<f32>(o + 3 * ys, f32x4.extract_lane(v, 3));
    }
  }
  for (let b = b4; b < batch; b++) {
    const x = xq + <usize>b * cp, bo = <usize>b << 2;
    const f: f32 = load<f32>(xa + bo) * scale;
    const sx = load<i32>(xs + bo);
    const o = y + <usize>b * ys;
    let r = r0;
    for (; r + 2 <= r1; r += 2) {
      const t = dot2(w + <usize>r * wr, w + <usize>(r + 1) * wr, x, nb);
      store<f32>(o + (<usize>r << 2), <f32>(i32x4.extract_lane(t, 0) - sx) * f);
      store<f32>(o + (<usize>(r + 1) << 2), <f32>(i32x4.extract_lane(t, 1) - sx) * f);
    }
    if (r < r1) store<f32>(o + (<usize>r << 2), <f32>dot1(w + <usize>r * wr, x, nb, sx) * f);
  }
}
