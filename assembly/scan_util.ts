// Shared pieces of the recurrent-scan kernels (linear attention, SSMs, RNNs): a lane-wise exp, and the
// small dense products of the chunked (parallel) forms. Not re-exported from index.ts.
//
// Matrices are addressed by element strides so that one routine serves plain, transposed and
// strided-in-the-input operands: A(i, p) sits at a + 4·(i·ars + p·aks).
import { FUSE_MADD } from './base';

/** a·b + c; fused only where base.ts FUSE_MADD allows it (engines differ in fusing relaxed_madd). */
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (FUSE_MADD && ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/**
 * exp(x) per lane: vmath's expV (same Cody–Waite reduction and polynomial, ~2 ulp; 0 below −87.33,
 * saturating at e^88, NaN stays NaN; bit-identical to it without FUSE_MADD) at about half the cost
 * on V8: the clamps use pmin/pmax (plain minps/maxps), and n = round(x·log2 e) comes from the 1.5·2²³
 * shifter, whose low mantissa bits already hold the integer for the exponent field, instead of
 * floor + trunc_sat. With FUSE_MADD the multiply-adds fuse (≤ 1 ulp more rounding difference).
 */
@inline export function expF(x: v128): v128 {
  const lo = f32x4.splat(-87.33654);
  const under = f32x4.lt(x, lo);
  const c = f32x4.pmax(f32x4.pmin(x, f32x4.splat(88.0)), lo);
  const shifter = f32x4.splat(12582912.0);
  const t = madd(c, f32x4.splat(1.44269504088896341), shifter);
  const n = f32x4.sub(t, shifter);
  let v = madd(n, f32x4.splat(-0.693359375), c);
  v = madd(n, f32x4.splat(2.12194440e-4), v);
  const z = f32x4.mul(v, v);
  let y = f32x4.splat(1.9875691500e-4);
  y = madd(y, v, f32x4.splat(1.3981999507e-3));
  y = madd(y, v, f32x4.splat(8.3334519073e-3));
  y = madd(y, v, f32x4.splat(4.1665795894e-2));
  y = madd(y, v, f32x4.splat(1.6666665459e-1));
  y = madd(y, v, f32x4.splat(5.0000001201e-1));
  y = f32x4.add(madd(y, z, v), f32x4.splat(1.0));
  // t's bits are 0x4B400000 + n: shifted left by 23 only n remains, in the exponent field.
  const pow2n = i32x4.add(i32x4.shl(t, 23), i32x4.splat(127 << 23));
  return v128.andnot(f32x4.mul(y, pow2n), under);
}

/** exp(x) of one f32 through expF, so scalar tails round like the vector lanes. */
export function expS(x: f32): f32 {
  return f32x4.extract_lane(expF(f32x4.splat(x)), 0);
}

/**
 * C[m×n] = A·B (beta 0; C is not read) or C += A·B (beta 1). B(p, j) at b + 4·(p·ldb + j), C(i, j)
 * at c + 4·(i·ldc + j). aTri: A is lower triangular with zeros stored above the diagonal, so a tile
 * of rows i0..i0+3 only needs p < i0 + 4. cLower: only the lower triangle of C is wanted; a tile of
 * rows i0..i0+3 stops at column i0 + 3 (its entries above the diagonal are written too).
 * Register tile: 4 rows × 8 columns (two f32x4 per row).
 */
export function gemmNN(c: usize, ldc: i32, a: usize, ars: i32, aks: i32, b: usize, ldb: i32, m: i32, nAll: i32, kd: i32, beta: i32, aTri: i32, cLower: i32 = 0): void {
  const ars4 = <usize>ars << 2, aks4 = <usize>aks << 2, ldb4 = <usize>ldb << 2, ldc4 = <usize>ldc << 2;
  const zero = f32x4.splat(0);
  let i0 = 0;
  for (; i0 + 4 <= m; i0 += 4) {
    const kEnd = aTri ? min(kd, i0 + 4) : kd;
    const n = cLower ? min(nAll, i0 + 4) : nAll;
    const ar = a + <usize>i0 * ars4;
    const cr = c + <usize>i0 * ldc4;
    let j = 0;
    for (; j + 8 <= n; j += 8) {
      let c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
      let pa = ar, pb = b + (<usize>j << 2);
      for (let p = 0; p < kEnd; p++) {
        const b0 = v128.load(pb), b1 = v128.load(pb, 16);
        const a0 = v128.load32_splat(pa);
        const a1 = v128.load32_splat(pa + ars4);
        const a2 = v128.load32_splat(pa + 2 * ars4);
        const a3 = v128.load32_splat(pa + 3 * ars4);
        c00 = madd(a0, b0, c00); c01 = madd(a0, b1, c01);
        c10 = madd(a1, b0, c10); c11 = madd(a1, b1, c11);
        c20 = madd(a2, b0, c20); c21 = madd(a2, b1, c21);
        c30 = madd(a3, b0, c30); c31 = madd(a3, b1, c31);
        pa += aks4; pb += ldb4;
      }
      const pc = cr + (<usize>j << 2);
      if (beta) {
        c00 = f32x4.add(c00, v128.load(pc)); c01 = f32x4.add(c01, v128.load(pc, 16));
        c10 = f32x4.add(c10, v128.load(pc + ldc4)); c11 = f32x4.add(c11, v128.load(pc + ldc4, 16));
        c20 = f32x4.add(c20, v128.load(pc + 2 * ldc4)); c21 = f32x4.add(c21, v128.load(pc + 2 * ldc4, 16));
        c30 = f32x4.add(c30, v128.load(pc + 3 * ldc4)); c31 = f32x4.add(c31, v128.load(pc + 3 * ldc4, 16));
      }
      v128.store(pc, c00); v128.store(pc, c01, 16);
      v128.store(pc + ldc4, c10); v128.store(pc + ldc4, c11, 16);
      v128.store(pc + 2 * ldc4, c20); v128.store(pc + 2 * ldc4, c21, 16);
      v128.store(pc + 3 * ldc4, c30); v128.store(pc + 3 * ldc4, c31, 16);
    }
    for (; j + 4 <= n; j += 4) {
      let c0 = zero, c1 = zero, c2 = zero, c3 = zero;
      let pa = ar, pb = b + (<usize>j << 2);
      for (let p = 0; p < kEnd; p++) {
        const b0 = v128.load(pb);
        c0 = madd(v128.load32_splat(pa), b0, c0);
        c1 = madd(v128.load32_splat(pa + ars4), b0, c1);
        c2 = madd(v128.load32_splat(pa + 2 * ars4), b0, c2);
        c3 = madd(v128.load32_splat(pa + 3 * ars4), b0, c3);
        pa += aks4; pb += ldb4;
      }
      const pc = cr + (<usize>j << 2);
      if (beta) {
        c0 = f32x4.add(c0, v128.load(pc)); c1 = f32x4.add(c1, v128.load(pc + ldc4));
        c2 = f32x4.add(c2, v128.load(pc + 2 * ldc4)); c3 = f32x4.add(c3, v128.load(pc + 3 * ldc4));
      }
      v128.store(pc, c0); v128.store(pc + ldc4, c1); v128.store(pc + 2 * ldc4, c2); v128.store(pc + 3 * ldc4, c3);
    }
    for (; j < n; j++) {
      let s0: f32 = 0, s1: f32 = 0, s2: f32 = 0, s3: f32 = 0;
      let pa = ar, pb = b + (<usize>j << 2);
      for (let p = 0; p < kEnd; p++) {
        const bv = load<f32>(pb);
        s0 += load<f32>(pa) * bv; s1 += load<f32>(pa + ars4) * bv;
        s2 += load<f32>(pa + 2 * ars4) * bv; s3 += load<f32>(pa + 3 * ars4) * bv;
        pa += aks4; pb += ldb4;
      }
      const pc = cr + (<usize>j << 2);
      if (beta) {
        s0 += load<f32>(pc); s1 += load<f32>(pc + ldc4); s2 += load<f32>(pc + 2 * ldc4); s3 += load<f32>(pc + 3 * ldc4);
      }
      store<f32>(pc, s0); store<f32>(pc + ldc4, s1); store<f32>(pc + 2 * ldc4, s2); store<f32>(pc + 3 * ldc4, s3);
    }
  }
  for (; i0 < m; i0++) {
    const kEnd = aTri ? min(kd, i0 + 1) : kd;
    const n = cLower ? min(nAll, i0 + 1) : nAll;
    const ar = a + <usize>i0 * ars4;
    const cr = c + <usize>i0 * ldc4;
    let j = 0;
    for (; j + 8 <= n; j += 8) {
      let c0 = zero, c1 = zero;
      let pa = ar, pb = b + (<usize>j << 2);
      for (let p = 0; p < kEnd; p++) {
        const av = v128.load32_splat(pa);
        c0 = madd(av, v128.load(pb), c0);
        c1 = madd(av, v128.load(pb, 16), c1);
        pa += aks4; pb += ldb4;
      }
      const pc = cr + (<usize>j << 2);
      if (beta) { c0 = f32x4.add(c0, v128.load(pc)); c1 = f32x4.add(c1, v128.load(pc, 16)); }
      v128.store(pc, c0); v128.store(pc, c1, 16);
    }
    for (; j + 4 <= n; j += 4) {
      let c0 = zero;
      let pa = ar, pb = b + (<usize>j << 2);
      for (let p = 0; p < kEnd; p++) {
        c0 = madd(v128.load32_splat(pa), v128.load(pb), c0);
        pa += aks4; pb += ldb4;
      }
      const pc = cr + (<usize>j << 2);
      if (beta) c0 = f32x4.add(c0, v128.load(pc));
      v128.store(pc, c0);
    }
    for (; j < n; j++) {
      let s: f32 = 0;
      let pa = ar, pb = b + (<usize>j << 2);
      for (let p = 0; p < kEnd; p++) {
        s += load<f32>(pa) * load<f32>(pb);
        pa += aks4; pb += ldb4;
      }
      const pc = cr + (<usize>j << 2);
      store<f32>(pc, beta ? s + load<f32>(pc) : s);
    }
  }
}

@inline function hsum4(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

/** Σ_p a[p]·b[p] over kd floats (both contiguous), two vector accumulators. */
@inline export function dotF(a: usize, b: usize, kd: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let p = 0;
  for (; p + 8 <= kd; p += 8) {
    const o = <usize>p << 2;
    s0 = madd(v128.load(a + o), v128.load(b + o), s0);
    s1 = madd(v128.load(a + o, 16), v128.load(b + o, 16), s1);
  }
  for (; p + 4 <= kd; p += 4) {
    const o = <usize>p << 2;
    s0 = madd(v128.load(a + o), v128.load(b + o), s0);
  }
  let s = hsum4(f32x4.add(s0, s1));
  for (; p < kd; p++) s += load<f32>(a + (<usize>p << 2)) * load<f32>(b + (<usize>p << 2));
  return s;
}

/**
 * C(i, j) = Σ_p A(i, p)·B(j, p) for rows of A and B contiguous along p (row strides lda, ldb), i < m,
 * j < n; lower (1): a pair of rows i, i+1 stops at column i+1, so everything on and below the
 * diagonal is written, plus (i, i+1); callers mask the upper triangle themselves.
 * Tile: 2 rows of A × 2 rows of B, horizontal sums at the end.
 */
export function gemmNT(c: usize, ldc: i32, a: usize, lda: i32, b: usize, ldb: i32, m: i32, n: i32, kd: i32, lower: i32): void {
  const lda4 = <usize>lda << 2, ldb4 = <usize>ldb << 2, ldc4 = <usize>ldc << 2;
  const zero = f32x4.splat(0);
  const kv = kd & ~3;
  let i = 0;
  for (; i + 2 <= m; i += 2) {
    const a0 = a + <usize>i * lda4, a1 = a0 + lda4;
    const c0 = c + <usize>i * ldc4, c1 = c0 + ldc4;
    const nEnd = lower ? min(n, i + 2) : n;
    let j = 0;
    for (; j + 2 <= nEnd; j += 2) {
      const b0 = b + <usize>j * ldb4, b1 = b0 + ldb4;
      let s00 = zero, s01 = zero, s10 = zero, s11 = zero;
      for (let p = 0; p < kv; p += 4) {
        const o = <usize>p << 2;
        const x0 = v128.load(a0 + o), x1 = v128.load(a1 + o);
        const y0 = v128.load(b0 + o), y1 = v128.load(b1 + o);
        s00 = madd(x0, y0, s00); s01 = madd(x0, y1, s01);
        s10 = madd(x1, y0, s10); s11 = madd(x1, y1, s11);
      }
      let r00 = hsum4(s00), r01 = hsum4(s01), r10 = hsum4(s10), r11 = hsum4(s11);
      for (let p = kv; p < kd; p++) {
        const o = <usize>p << 2;
        const x0 = load<f32>(a0 + o), x1 = load<f32>(a1 + o), y0 = load<f32>(b0 + o), y1 = load<f32>(b1 + o);
        r00 += x0 * y0; r01 += x0 * y1; r10 += x1 * y0; r11 += x1 * y1;
      }
      const jo = <usize>j << 2;
      store<f32>(c0 + jo, r00); store<f32>(c0 + jo, r01, 4);
      store<f32>(c1 + jo, r10); store<f32>(c1 + jo, r11, 4);
    }
    for (; j < nEnd; j++) {
      const bj = b + <usize>j * ldb4;
      store<f32>(c0 + (<usize>j << 2), dotF(a0, bj, kd));
      store<f32>(c1 + (<usize>j << 2), dotF(a1, bj, kd));
    }
  }
  for (; i < m; i++) {
    const ai = a + <usize>i * lda4;
    const ci = c + <usize>i * ldc4;
    const nEnd = lower ? min(n, i + 1) : n;
    for (let j = 0; j < nEnd; j++) store<f32>(ci + (<usize>j << 2), dotF(ai, b + <usize>j * ldb4, kd));
  }
}
