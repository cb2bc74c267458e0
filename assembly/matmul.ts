// Matrix-vector / small-batch matrix-matrix products over f32, f16, bf16, Q8_0 and Q4_0 weights.
// W is row-major [rows, cols] (HF Linear layout: out × in), quantized blocks run along cols;
// X is [batch, cols] f32; Y is [batch, rows] f32:  Y[b, r] = Σ_c W[r, c]·X[b, c].
// Every kernel computes weight rows [r0, r1) so a worker pool can split the rows; each output
// element is computed by the same code whatever the split, so split results are bit-identical.
// Weight rows are the outer loop and X rows are taken four at a time inside it: a weight row is
// read from memory once and reused from L1 for the whole batch.
import {
  DT_BF16, DT_F16, DT_F32, f16Finite8, f16HiToF32, f16ToF32, i8ToF32, KC, loadBF16x4, loadF16x4, loadF16x4Finite,
} from './quant';

export { dequantRow, quantizeActQ8, quantizeRowsQ4_0, quantizeRowsQ8_0 } from './quant';

@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

@inline function hsumF(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

@inline function hsumI(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3);
}

// ---------------------------------------------------------------------------------------------
// Float weights (f32, f16, bf16): converted to f32 in registers, f32 accumulation.

@inline function wv(dt: i32, w: usize, c: i32): v128 {
  if (dt == DT_F32) return v128.load(w + (<usize>c << 2));
  if (dt == DT_F16) return loadF16x4(w + (<usize>c << 1));
  return loadBF16x4(w + (<usize>c << 1));
}

@inline function ws(dt: i32, w: usize, c: i32): f32 {
  if (dt == DT_F32) return load<f32>(w + (<usize>c << 2));
  if (dt == DT_F16) return f16ToF32(load<u16>(w + (<usize>c << 1)));
  return reinterpret<f32>(<u32>load<u16>(w + (<usize>c << 1)) << 16);
}

/**
 * Weights c … c+7 of a row as two f32x4 (lo, hi). f16 takes the short conversion when none of the
 * eight is inf/NaN (checked per eight), else the full one.
 */
@inline function w8lo(dt: i32, w: usize, c: i32, finite: bool): v128 {
  if (dt == DT_F16 && finite) return loadF16x4Finite(w + (<usize>c << 1));
  return wv(dt, w, c);
}

@inline function w8hi(dt: i32, w: usize, c: i32, finite: bool): v128 {
  if (dt == DT_F16 && finite) return loadF16x4Finite(w + (<usize>c << 1) + 8);
  return wv(dt, w, c + 4);
}

@inline function finite8(dt: i32, w: usize, c: i32): bool {
  return dt == DT_F16 ? f16Finite8(w + (<usize>c << 1)) : true;
}

/**
 * One X row · weight rows wa and (when `two`) wb, results to ya / yb. Decode streams two distant
 * weight rows at once: two sequential streams keep more cache misses in flight than one (about
 * 1.4× the bandwidth on the reference machine). Each row's arithmetic is the same with or without
 * a partner, so any split of the rows gives the same bits.
 */
@inline function dotFloatRows(dt: i32, two: bool, wa: usize, wb: usize, x: usize, cols: i32, ya: usize, yb: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), b0 = f32x4.splat(0), b1 = f32x4.splat(0);
  let c = 0;
  for (; c + 8 <= cols; c += 8) {
    const o = <usize>c << 2;
    const x0 = v128.load(x + o), x1 = v128.load(x + o, 16);
    const fa = finite8(dt, wa, c);
    a0 = madd(w8lo(dt, wa, c, fa), x0, a0);
    a1 = madd(w8hi(dt, wa, c, fa), x1, a1);
    if (two) {
      const fb = finite8(dt, wb, c);
      b0 = madd(w8lo(dt, wb, c, fb), x0, b0);
      b1 = madd(w8hi(dt, wb, c, fb), x1, b1);
    }
  }
  for (; c + 4 <= cols; c += 4) {
    const xv = v128.load(x + (<usize>c << 2));
    a0 = madd(wv(dt, wa, c), xv, a0);
    if (two) b0 = madd(wv(dt, wb, c), xv, b0);
  }
  let sa = hsumF(f32x4.add(a0, a1)), sb = hsumF(f32x4.add(b0, b1));
  for (; c < cols; c++) {
    const xs = load<f32>(x + (<usize>c << 2));
    sa += ws(dt, wa, c) * xs;
    if (two) sb += ws(dt, wb, c) * xs;
  }
  store<f32>(ya, sa);
  if (two) store<f32>(yb, sb);
}

/** Four X rows (xs bytes apart) against one weight row; results to y, y + ys, y + 2ys, y + 3ys. */
@inline function dotFloat4(dt: i32, w: usize, x: usize, xs: usize, cols: i32, y: usize, ys: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
  const x1 = x + xs, x2 = x1 + xs, x3 = x2 + xs;
  let c = 0;
  for (; c + 8 <= cols; c += 8) {
    const o = <usize>c << 2;
    const f = finite8(dt, w, c);
    const u = w8lo(dt, w, c, f), v = w8hi(dt, w, c, f);
    a0 = madd(u, v128.load(x + o), a0);
    a1 = madd(u, v128.load(x1 + o), a1);
    a2 = madd(u, v128.load(x2 + o), a2);
    a3 = madd(u, v128.load(x3 + o), a3);
    b0 = madd(v, v128.load(x + o, 16), b0);
    b1 = madd(v, v128.load(x1 + o, 16), b1);
    b2 = madd(v, v128.load(x2 + o, 16), b2);
    b3 = madd(v, v128.load(x3 + o, 16), b3);
  }
  for (; c + 4 <= cols; c += 4) {
    const o = <usize>c << 2;
    const u = wv(dt, w, c);
    a0 = madd(u, v128.load(x + o), a0);
    a1 = madd(u, v128.load(x1 + o), a1);
    a2 = madd(u, v128.load(x2 + o), a2);
    a3 = madd(u, v128.load(x3 + o), a3);
  }
  let s0 = hsumF(f32x4.add(a0, b0)), s1 = hsumF(f32x4.add(a1, b1));
  let s2 = hsumF(f32x4.add(a2, b2)), s3 = hsumF(f32x4.add(a3, b3));
  for (; c < cols; c++) {
    const o = <usize>c << 2;
    const u = ws(dt, w, c);
    s0 += u * load<f32>(x + o);
    s1 += u * load<f32>(x1 + o);
    s2 += u * load<f32>(x2 + o);
    s3 += u * load<f32>(x3 + o);
  }
  store<f32>(y, s0);
  store<f32>(y + ys, s1);
  store<f32>(y + 2 * ys, s2);
  store<f32>(y + 3 * ys, s3);
}

/**
 * Rows [r0, r1) taken as pairs (r0 + i, r0 + h + i), h = ⌊(r1 − r0)/2⌋, plus the last row when the
 * count is odd; X rows four at a time (one weight row each), the rest against the pair.
 */
@inline function matmulFloat(dt: i32, y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const wrb: usize = dt == DT_F32 ? <usize>cols << 2 : <usize>cols << 1;
  const xs = <usize>cols << 2, ys = <usize>rows << 2;
  const h = (r1 - r0) >> 1;
  const b4 = batch & ~3;
  for (let i = 0; i < h; i++) {
    const ra = r0 + i, rb = ra + h;
    const wa = w + <usize>ra * wrb, wb = w + <usize>rb * wrb, ya = y + (<usize>ra << 2), yb = y + (<usize>rb << 2);
    for (let b = 0; b < b4; b += 4) {
      dotFloat4(dt, wa, x + <usize>b * xs, xs, cols, ya + <usize>b * ys, ys);
      dotFloat4(dt, wb, x + <usize>b * xs, xs, cols, yb + <usize>b * ys, ys);
    }
    for (let b = b4; b < batch; b++) dotFloatRows(dt, true, wa, wb, x + <usize>b * xs, cols, ya + <usize>b * ys, yb + <usize>b * ys);
  }
  if ((r1 - r0) & 1) {
    const r = r1 - 1;
    const wr = w + <usize>r * wrb, yr = y + (<usize>r << 2);
    for (let b = 0; b < b4; b += 4) dotFloat4(dt, wr, x + <usize>b * xs, xs, cols, yr + <usize>b * ys, ys);
    for (let b = b4; b < batch; b++) dotFloatRows(dt, false, wr, wr, x + <usize>b * xs, cols, yr + <usize>b * ys, yr + <usize>b * ys);
  }
}

/** Rows [r0, r1) of Y = X·Wᵀ, W f32. */
export function matmulF32(y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulFloat(DT_F32, y, x, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W f16 (IEEE half, subnormals and inf/NaN converted exactly). */
export function matmulF16(y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulFloat(DT_F16, y, x, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W bf16. */
export function matmulBF16(y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulFloat(DT_BF16, y, x, w, batch, rows, cols, r0, r1);
}

// ---------------------------------------------------------------------------------------------
// Quantized weights × int8 activations (quantizeActQ8 output): exact integer dot per 32-block,
// then Σ_blocks f32(Σq_w·q_x)·(d_w·d_x) in f32.
//
// The i32x4 partial sums of one block are split across lanes differently by the relaxed dot and
// by the baseline extend+dot_i16x8 path, so lanes are only ever combined as exact integers: four
// blocks' partials are transposed into one vector of four block totals (hsum4) before anything is
// converted to f32. The float work that follows is the same instructions in both builds, so the
// relaxed and the baseline builds give bit-identical results.
//
// Relaxed dot: i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b) is deterministic only with every byte of
// b in [0, 127]. Q8_0: the sign of x moves onto w (w·x = (w ⊙ sign x)·|x|, |x| ≤ 127 since
// activations are quantized to [−127, 127]); w = −128 has no negation in int8, and ggml's
// quantizers never write it (q = roundf(x·127/amax)). Q4_0: (q − 8)·x = x·q − 8x with the unsigned
// nibble q ∈ [0, 15] as b; the 8·Σx term comes from the xs sums.

/** Four blocks' i32x4 partials → [Σa, Σb, Σc, Σd]. */
@inline function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 1, 4, 5), i32x4.shuffle(a, b, 2, 3, 6, 7));
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 1, 4, 5), i32x4.shuffle(c, d, 2, 3, 6, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 2, 4, 6), i32x4.shuffle(ab, cd, 1, 3, 5, 7));
}

/** Relaxed: 32 int8 weights (w0, w1) · 32 int8 x, sign moved onto the weights. */
@inline function rdotQ8(w0: v128, w1: v128, x: usize): v128 {
  const x0 = v128.load(x), x1 = v128.load(x, 16);
  const z = i8x16.splat(0);
  const m0 = i8x16.lt_s(x0, z), m1 = i8x16.lt_s(x1, z);
  const s = i32x4.relaxed_dot_i8x16_i7x16_add_s(i8x16.sub(v128.xor(w0, m0), m0), i8x16.abs(x0), i32x4.splat(0));
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(i8x16.sub(v128.xor(w1, m1), m1), i8x16.abs(x1), s);
}

/** Relaxed: x · q with unsigned nibbles lo (elements 0–15) and hi (16–31) as the 7-bit operand. */
@inline function rdotQ4(lo: v128, hi: v128, x: usize): v128 {
  const s = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(x), lo, i32x4.splat(0));
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(x, 16), hi, s);
}

/** Baseline: weights already widened to i16x8 (elements 0–7, 8–15, 16–23, 24–31) · 32 int8 x. */
@inline function bdot(e0: v128, e1: v128, e2: v128, e3: v128, x: usize): v128 {
  const a = i32x4.add(i32x4.dot_i16x8_s(e0, v128.load8x8_s(x)), i32x4.dot_i16x8_s(e1, v128.load8x8_s(x, 8)));
  const b = i32x4.add(i32x4.dot_i16x8_s(e2, v128.load8x8_s(x, 16)), i32x4.dot_i16x8_s(e3, v128.load8x8_s(x, 24)));
  return i32x4.add(a, b);
}

/** Partials of Σ w·x over one block; w points at the block's quants (after d). Q4_0: Σ q·x, q ∈ [0, 15]. */
@inline function blockDot(q4: bool, w: usize, x: usize): v128 {
  if (q4) {
    const v = v128.load(w);
    const lo = v128.and(v, i8x16.splat(15)), hi = i8x16.shr_u(v, 4);
    if (ASC_FEATURE_RELAXED_SIMD) return rdotQ4(lo, hi, x);
    return bdot(i16x8.extend_low_i8x16_u(lo), i16x8.extend_high_i8x16_u(lo), i16x8.extend_low_i8x16_u(hi), i16x8.extend_high_i8x16_u(hi), x);
  }
  if (ASC_FEATURE_RELAXED_SIMD) return rdotQ8(v128.load(w), v128.load(w, 16), x);
  return bdot(v128.load8x8_s(w), v128.load8x8_s(w, 8), v128.load8x8_s(w, 16), v128.load8x8_s(w, 24), x);
}

// One X row against one or two weight rows (decode). The loop takes two blocks per iteration and
// closes a group of four every second iteration inside a branch: V8 hoists every load of a
// straight-line loop body to its top, and with four blocks' loads in one body it runs out of
// registers. The activation side of each block (|x| and sign masks, or x widened to i16) is
// computed once per block and shared by both weight rows, which keeps the activations at one byte
// per element in L1 (a wider copy of an 8192-wide row no longer fits beside the weight stream).

/**
 * Σ over one block of weights (w at the block's quants) with the activation side X0…X3 from
 * xside(). Relaxed Q8_0: Σ (w ⊙ sign x)·|x|, X0/X1 = |x| halves, X2/X3 = sign masks; relaxed Q4_0:
 * Σ x·q with x first and the nibbles second, both halves summed in i16 (|Σ| ≤ 4·15·127);
 * baseline: Σ w·x over i16 (X0…X3 = x widened, elements 0–7, 8–15, 16–23, 24–31).
 */
@inline function blockW(q4: bool, w: usize, X0: v128, X1: v128, X2: v128, X3: v128, ones: v128): v128 {
  if (q4) {
    const v = v128.load(w), m = v128.load(KC, 80);
    const lo = v128.and(v, m), hi = v128.and(i16x8.shr_u(v, 4), m);
    if (ASC_FEATURE_RELAXED_SIMD) {
      return i32x4.dot_i16x8_s(i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(X0, lo), i16x8.relaxed_dot_i8x16_i7x16_s(X1, hi)), ones);
    }
    const a = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), X0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), X1));
    const b = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), X2), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), X3));
    return i32x4.add(a, b);
  }
  if (ASC_FEATURE_RELAXED_SIMD) {
    const p0 = i16x8.relaxed_dot_i8x16_i7x16_s(i8x16.sub(v128.xor(v128.load(w), X2), X2), X0);
    const p1 = i16x8.relaxed_dot_i8x16_i7x16_s(i8x16.sub(v128.xor(v128.load(w, 16), X3), X3), X1);
    return i32x4.add(i32x4.dot_i16x8_s(p0, ones), i32x4.dot_i16x8_s(p1, ones));
  }
  const a = i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(w), X0), i32x4.dot_i16x8_s(v128.load8x8_s(w, 8), X1));
  const b = i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(w, 16), X2), i32x4.dot_i16x8_s(v128.load8x8_s(w, 24), X3));
  return i32x4.add(a, b);
}

/** Four consecutive f32/i32 at p, `st` bytes apart. */
@inline function gather4(p: usize, st: usize): v128 {
  if (st == 4) return v128.load(p);
  let v = v128.load32_zero(p);
  v = v128.load32_lane(p + st, v, 1);
  v = v128.load32_lane(p + 2 * st, v, 2);
  return v128.load32_lane(p + 3 * st, v, 3);
}

/** Scales (f16 d at w, w + bs, w + 2bs, w + 3bs) × d_x of four blocks. */
@inline function scales4(w: usize, bs: usize, dx: v128): v128 {
  let hw = v128.load16_lane(w, i32x4.splat(0), 1);
  hw = v128.load16_lane(w + bs, hw, 3);
  hw = v128.load16_lane(w + 2 * bs, hw, 5);
  hw = v128.load16_lane(w + 3 * bs, hw, 7);
  return f32x4.mul(f16HiToF32(hw), dx);
}

/** Blocks nb4 … nb−1 (fewer than four) of one row, one at a time. */
@inline function qtail(q4: bool, wr: usize, x8: usize, xd: usize, xs: usize, st: usize, nb4: i32, nb: i32, s: f32): f32 {
  const bs: usize = q4 ? 18 : 34;
  for (let k = nb4; k < nb; k++) {
    const w = wr + <usize>k * bs;
    let t = hsumI(blockDot(q4, w + 2, x8 + (<usize>k << 5)));
    if (q4) t -= load<i32>(xs + <usize>k * st) << 3;
    s += <f32>t * (f16ToF32(load<u16>(w)) * load<f32>(xd + <usize>k * st));
  }
  return s;
}

/**
 * One X row (int8 at x8) · weight rows wa and (when `two`) wb, results to ya / yb; scales/sums of
 * block 0 at xd/xs, `st` bytes between blocks. Two distant weight rows stream at once (see
 * dotFloatRows); each row's arithmetic does not depend on its partner.
 */
@inline function qdotRows(q4: bool, two: bool, wa: usize, wb: usize, x8: usize, xd: usize, xs: usize, st: usize, nb: i32, ya: usize, yb: usize): void {
  const bs: usize = q4 ? 18 : 34;
  const ones = v128.load(KC, 64);
  const z = i8x16.splat(0);
  const nb4 = nb & ~3;
  let accA = f32x4.splat(0), pendA = i32x4.splat(0), accB = f32x4.splat(0), pendB = i32x4.splat(0);
  for (let k = 0; k < nb4; k += 2) {
    const o = <usize>k * bs, x = x8 + (<usize>k << 5);
    // Activation side of blocks k (a·) and k+1 (b·).
    let a0: v128, a1: v128, a2: v128, a3: v128, b0: v128, b1: v128, b2: v128, b3: v128;
    if (ASC_FEATURE_RELAXED_SIMD) {
      const u0 = v128.load(x), u1 = v128.load(x, 16), v0 = v128.load(x, 32), v1 = v128.load(x, 48);
      if (q4) {
        a0 = u0; a1 = u1; b0 = v0; b1 = v1;
        a2 = a3 = b2 = b3 = z;
      } else {
        a0 = i8x16.abs(u0); a1 = i8x16.abs(u1); a2 = i8x16.lt_s(u0, z); a3 = i8x16.lt_s(u1, z);
        b0 = i8x16.abs(v0); b1 = i8x16.abs(v1); b2 = i8x16.lt_s(v0, z); b3 = i8x16.lt_s(v1, z);
      }
    } else {
      a0 = v128.load8x8_s(x); a1 = v128.load8x8_s(x, 8); a2 = v128.load8x8_s(x, 16); a3 = v128.load8x8_s(x, 24);
      b0 = v128.load8x8_s(x, 32); b1 = v128.load8x8_s(x, 40); b2 = v128.load8x8_s(x, 48); b3 = v128.load8x8_s(x, 56);
    }
    const sa0 = blockW(q4, wa + o + 2, a0, a1, a2, a3, ones);
    const sa1 = blockW(q4, wa + o + bs + 2, b0, b1, b2, b3, ones);
    const pa = i32x4.add(i32x4.shuffle(sa0, sa1, 0, 1, 4, 5), i32x4.shuffle(sa0, sa1, 2, 3, 6, 7));
    let pb = pendB;
    if (two) {
      const sb0 = blockW(q4, wb + o + 2, a0, a1, a2, a3, ones);
      const sb1 = blockW(q4, wb + o + bs + 2, b0, b1, b2, b3, ones);
      pb = i32x4.add(i32x4.shuffle(sb0, sb1, 0, 1, 4, 5), i32x4.shuffle(sb0, sb1, 2, 3, 6, 7));
    }
    if (k & 2) {
      // Blocks k−2 … k+1: exact integer totals, then Σ f32(total)·(d_w·d_x).
      let ta = i32x4.add(i32x4.shuffle(pendA, pa, 0, 2, 4, 6), i32x4.shuffle(pendA, pa, 1, 3, 5, 7));
      let tb = i32x4.add(i32x4.shuffle(pendB, pb, 0, 2, 4, 6), i32x4.shuffle(pendB, pb, 1, 3, 5, 7));
      const g = <usize>(k - 2) * st;
      if (q4) {
        const sx = i32x4.shl(gather4(xs + g, st), 3);
        ta = i32x4.sub(ta, sx);
        tb = i32x4.sub(tb, sx);
      }
      const dx = gather4(xd + g, st);
      const w0 = o - 2 * bs;
      accA = f32x4.add(accA, f32x4.mul(f32x4.convert_i32x4_s(ta), scales4(wa + w0, bs, dx)));
      if (two) accB = f32x4.add(accB, f32x4.mul(f32x4.convert_i32x4_s(tb), scales4(wb + w0, bs, dx)));
    } else {
      pendA = pa;
      pendB = pb;
    }
  }
  store<f32>(ya, qtail(q4, wa, x8, xd, xs, st, nb4, nb, hsumF(accA)));
  if (two) store<f32>(yb, qtail(q4, wb, x8, xd, xs, st, nb4, nb, hsumF(accB)));
}

/** Four X rows (quants xr, xr + cols, …; scales at xd/xs + k·st, contiguous over the four) · one weight row. */
@inline function qdot4(q4: bool, wr: usize, xr: usize, cols: usize, xd: usize, xs: usize, st: usize, nb: i32, y: usize, ys: usize): void {
  const bs: usize = q4 ? 18 : 34;
  const x1 = xr + cols, x2 = x1 + cols, x3 = x2 + cols;
  let acc = f32x4.splat(0);
  for (let k = 0; k < nb; k++) {
    const w = wr + <usize>k * bs, o = <usize>k << 5;
    let t: v128;
    if (q4) {
      const v = v128.load(w + 2);
      const lo = v128.and(v, i8x16.splat(15)), hi = i8x16.shr_u(v, 4);
      if (ASC_FEATURE_RELAXED_SIMD) {
        t = hsum4(rdotQ4(lo, hi, xr + o), rdotQ4(lo, hi, x1 + o), rdotQ4(lo, hi, x2 + o), rdotQ4(lo, hi, x3 + o));
      } else {
        const e0 = i16x8.extend_low_i8x16_u(lo), e1 = i16x8.extend_high_i8x16_u(lo);
        const e2 = i16x8.extend_low_i8x16_u(hi), e3 = i16x8.extend_high_i8x16_u(hi);
        t = hsum4(bdot(e0, e1, e2, e3, xr + o), bdot(e0, e1, e2, e3, x1 + o), bdot(e0, e1, e2, e3, x2 + o), bdot(e0, e1, e2, e3, x3 + o));
      }
      t = i32x4.sub(t, i32x4.shl(v128.load(xs + <usize>k * st), 3));
    } else {
      // Widened weights shared by the four rows beat the relaxed sign transfer, which is per row.
      const e0 = v128.load8x8_s(w + 2), e1 = v128.load8x8_s(w + 10), e2 = v128.load8x8_s(w + 18), e3 = v128.load8x8_s(w + 26);
      t = hsum4(bdot(e0, e1, e2, e3, xr + o), bdot(e0, e1, e2, e3, x1 + o), bdot(e0, e1, e2, e3, x2 + o), bdot(e0, e1, e2, e3, x3 + o));
    }
    const sc = f32x4.mul(f32x4.splat(f16ToF32(load<u16>(w))), v128.load(xd + <usize>k * st));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(t), sc));
  }
  store<f32>(y, f32x4.extract_lane(acc, 0));
  store<f32>(y + ys, f32x4.extract_lane(acc, 1));
  store<f32>(y + 2 * ys, f32x4.extract_lane(acc, 2));
  store<f32>(y + 3 * ys, f32x4.extract_lane(acc, 3));
}

@inline function matmulQ(q4: bool, y: usize, xq: usize, xd: usize, xs: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const nb = cols >> 5;
  const wrb = <usize>nb * (q4 ? 18 : 34);
  const st = <usize>batch << 2, ys = <usize>rows << 2;
  const b4 = batch & ~3;
  const h = (r1 - r0) >> 1;
  // Row pairs as in matmulFloat; the odd row last on its own.
  for (let i = 0; i <= h; i++) {
    const two = i < h;
    if (!two && ((r1 - r0) & 1) == 0) break;
    const ra = two ? r0 + i : r1 - 1, rb = ra + h;
    const wa = w + <usize>ra * wrb, wb = w + <usize>rb * wrb, ya = y + (<usize>ra << 2), yb = y + (<usize>rb << 2);
    for (let b = 0; b < b4; b += 4) {
      const xb = xq + <usize>b * cols, xdb = xd + (<usize>b << 2), xsb = xs + (<usize>b << 2), yo = <usize>b * ys;
      qdot4(q4, wa, xb, cols, xdb, xsb, st, nb, ya + yo, ys);
      if (two) qdot4(q4, wb, xb, cols, xdb, xsb, st, nb, yb + yo, ys);
    }
    for (let b = b4; b < batch; b++) {
      const x8 = xq + <usize>b * cols, xdb = xd + (<usize>b << 2), xsb = xs + (<usize>b << 2), yo = <usize>b * ys;
      if (two) qdotRows(q4, true, wa, wb, x8, xdb, xsb, st, nb, ya + yo, yb + yo);
      else qdotRows(q4, false, wa, wa, x8, xdb, xsb, st, nb, ya + yo, ya + yo);
    }
  }
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q8_0, X given as quantizeActQ8(xq, xd, xs, …) output. */
export function matmulQ8_0(y: usize, xq: usize, xd: usize, xs: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQ(false, y, xq, xd, xs, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q4_0, X given as quantizeActQ8(xq, xd, xs, …) output. */
export function matmulQ4_0(y: usize, xq: usize, xd: usize, xs: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQ(true, y, xq, xd, xs, w, batch, rows, cols, r0, r1);
}

// ---------------------------------------------------------------------------------------------
// Quantized weights × f32 activations ("exact" mode for parity runs): each block is dequantized in
// registers, y = Σ_blocks d_w·(Σ q·x) with f32 accumulation and no activation rounding.

/** The block's weights 0–15 (qLo) and 16–31 (qHi) as int8; Q4_0 nibbles become q − 8. */
@inline function qLo(q4: bool, w: usize): v128 {
  if (q4) return i8x16.sub(v128.and(v128.load(w + 2), i8x16.splat(15)), i8x16.splat(8));
  return v128.load(w + 2);
}

@inline function qHi(q4: bool, w: usize): v128 {
  if (q4) return i8x16.sub(i8x16.shr_u(v128.load(w + 2), 4), i8x16.splat(8));
  return v128.load(w + 18);
}

@inline function qexact1(q4: bool, wr: usize, x: usize, nb: i32): f32 {
  const bs: usize = q4 ? 18 : 34;
  let acc = f32x4.splat(0);
  for (let k = 0; k < nb; k++) {
    const w = wr + <usize>k * bs, xp = x + (<usize>k << 7);
    const v0 = qLo(q4, w), v1 = qHi(q4, w);
    let s0 = f32x4.mul(i8ToF32(v0, 0), v128.load(xp));
    let s1 = f32x4.mul(i8ToF32(v0, 1), v128.load(xp, 16));
    s0 = madd(i8ToF32(v0, 2), v128.load(xp, 32), s0);
    s1 = madd(i8ToF32(v0, 3), v128.load(xp, 48), s1);
    s0 = madd(i8ToF32(v1, 0), v128.load(xp, 64), s0);
    s1 = madd(i8ToF32(v1, 1), v128.load(xp, 80), s1);
    s0 = madd(i8ToF32(v1, 2), v128.load(xp, 96), s0);
    s1 = madd(i8ToF32(v1, 3), v128.load(xp, 112), s1);
    acc = madd(f32x4.add(s0, s1), f32x4.splat(f16ToF32(load<u16>(w))), acc);
  }
  return hsumF(acc);
}

@inline function qexact4(q4: bool, wr: usize, x: usize, xs: usize, nb: i32, y: usize, ys: usize): void {
  const bs: usize = q4 ? 18 : 34;
  const x1 = x + xs, x2 = x1 + xs, x3 = x2 + xs;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  for (let k = 0; k < nb; k++) {
    const w = wr + <usize>k * bs, o = <usize>k << 7;
    let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
    for (let h = 0; h < 2; h++) {
      const v = h == 0 ? qLo(q4, w) : qHi(q4, w);
      const ho = o + (<usize>h << 6);
      for (let p = 0; p < 4; p++) {
        const u = i8ToF32(v, p);
        const po = ho + (<usize>p << 4);
        s0 = madd(u, v128.load(x + po), s0);
        s1 = madd(u, v128.load(x1 + po), s1);
        s2 = madd(u, v128.load(x2 + po), s2);
        s3 = madd(u, v128.load(x3 + po), s3);
      }
    }
    const d = f32x4.splat(f16ToF32(load<u16>(w)));
    a0 = madd(s0, d, a0);
    a1 = madd(s1, d, a1);
    a2 = madd(s2, d, a2);
    a3 = madd(s3, d, a3);
  }
  store<f32>(y, hsumF(a0));
  store<f32>(y + ys, hsumF(a1));
  store<f32>(y + 2 * ys, hsumF(a2));
  store<f32>(y + 3 * ys, hsumF(a3));
}

@inline function matmulQExact(q4: bool, y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const nb = cols >> 5;
  const wrb = <usize>nb * (q4 ? 18 : 34);
  const xs = <usize>cols << 2, ys = <usize>rows << 2;
  for (let r = r0; r < r1; r++) {
    const wr = w + <usize>r * wrb, yr = y + (<usize>r << 2);
    let b = 0;
    for (; b + 4 <= batch; b += 4) qexact4(q4, wr, x + <usize>b * xs, xs, nb, yr + <usize>b * ys, ys);
    for (; b < batch; b++) store<f32>(yr + <usize>b * ys, qexact1(q4, wr, x + <usize>b * xs, nb));
  }
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q8_0 dequantized on the fly, X f32. */
export function matmulQ8_0Exact(y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQExact(false, y, x, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q4_0 dequantized on the fly, X f32. */
export function matmulQ4_0Exact(y: usize, x: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQExact(true, y, x, w, batch, rows, cols, r0, r1);
}

/** Number of Q8_0 quants equal to −128 in n blocks at w (the relaxed path needs none; ggml writes none). */
export function q8_0CountMin(w: usize, n: i32): i32 {
  const m = i8x16.splat(-128);
  let c = i32x4.splat(0);
  for (let k = 0; k < n; k++) {
    const b = w + <usize>k * 34;
    const e = i8x16.add(i8x16.eq(v128.load(b + 2), m), i8x16.eq(v128.load(b + 18), m));
    c = i32x4.add(c, i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(e)));
  }
  return -hsumI(c);
}

/** Memory-bandwidth probe: Σ of the f32 in chunks [r0, r1) of `chunk` bytes at p (chunk % 64 == 0). */
export function readSum(p: usize, chunk: i32, r0: i32, r1: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  const end = p + <usize>r1 * chunk;
  for (let q = p + <usize>r0 * chunk; q < end; q += 64) {
    a0 = f32x4.add(a0, v128.load(q));
    a1 = f32x4.add(a1, v128.load(q, 16));
    a2 = f32x4.add(a2, v128.load(q, 32));
    a3 = f32x4.add(a3, v128.load(q, 48));
  }
  return hsumF(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
}
