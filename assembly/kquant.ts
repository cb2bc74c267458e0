// Matrix products over ggml K-quant weights (Q2_K … Q6_K, IQ4_XS with Q8_K activations; IQ4_NL,
// MXFP4 and the legacy Q4_1, Q5_0, Q5_1 with Q8_0 activations), the Q8_K activation quantizer, and
// row dequantization.
//
// Block layouts (bytes): Q2_K 84, Q3_K 110, Q4_K 144, Q5_K 176, Q6_K 210, IQ4_XS 136 per 256 weights;
// IQ4_NL 18, MXFP4 17, Q4_1 20, Q5_0 22, Q5_1 24 per 32 weights (see src/formats/kquants.ts).
// Activations: Q8_K blocks of 292 B (f32 d, 256 int8, 16 int16 sums of 16), [batch, cols/256]; Q8_0
// blocks of 34 B, [batch, cols/32].
// dtype codes are the ggml type ids.
//
// Inside a super-block every product is an exact integer: the weights are unpacked to unsigned
// levels (their offsets, −4 for Q3_K and −32 for Q6_K, are folded through the activation sums) or,
// for the non-linear grids, to signed int8 by table lookup; 16-element dots are scaled by the
// integer sub-block scales and summed in i32x4 lanes, and only the exact total is converted to f32.
// The float work per block and its order are the same in every build:
//   Q2_K, Q4_K, Q5_K:    s += f32(Σ sc·q·x)·(d·dx) − f32(Σ m·bsum)·(dmin·dx)
//   Q3_K, Q6_K, IQ4_XS:  s += f32(Σ sc·(q − off)·x)·(d·dx)
//   IQ4_NL:              s += (d·dx)·f32(Σ q·x)
//   MXFP4:               s += (dx·2^(e−128))·f32(Σ q·x)
//   Q5_0:                s += (d·dx)·f32(Σ (q − 16)·x)
//   Q4_1, Q5_1:          s += ((d·dx)·f32(Σ q·x) + m·(dx·f32(Σ x)))
// so the relaxed and baseline builds give bit-identical results. The Q4_1 / Q5_1 min term is
// llama.cpp's m·s of its Q8_1 activations, with s = dx·Σx computed from the Q8_0 block (f32, not
// rounded to f16 as Q8_1 stores it).
import { f16ToF32 } from './quant';

const DT_Q2_K = 10;
const DT_Q3_K = 11;
const DT_Q4_K = 12;
const DT_Q5_K = 13;
const DT_Q6_K = 14;
const DT_Q8_K = 15;
const DT_IQ4_NL = 20;
const DT_IQ4_XS = 23;
const DT_MXFP4 = 39;
const DT_Q4_1 = 3;
const DT_Q5_0 = 6;
const DT_Q5_1 = 7;

/** Grids: 0 iq4_nl values, 16 mxfp4 values (e2m1 × 2). */
const KV: usize = memory.data<i8>([
  -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
  0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
], 16);

@inline function isBlock32(dt: i32): bool {
  return dt == DT_IQ4_NL || dt == DT_MXFP4 || dt == DT_Q4_1 || dt == DT_Q5_0 || dt == DT_Q5_1;
}

@inline function blockElems(dt: i32): i32 {
  return isBlock32(dt) ? 32 : 256;
}

@inline function blockBytes(dt: i32): usize {
  if (dt == DT_Q2_K) return 84;
  if (dt == DT_Q3_K) return 110;
  if (dt == DT_Q4_K) return 144;
  if (dt == DT_Q5_K) return 176;
  if (dt == DT_Q6_K) return 210;
  if (dt == DT_Q8_K) return 292;
  if (dt == DT_IQ4_NL) return 18;
  if (dt == DT_IQ4_XS) return 136;
  if (dt == DT_Q4_1) return 20;
  if (dt == DT_Q5_0) return 22;
  if (dt == DT_Q5_1) return 24;
  return 17;
}

@inline function hsumI(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3);
}

@inline function e8m0Half(e: u32): f32 {
  return reinterpret<f32>(e < 2 ? <u32>0x00200000 << e : (e - 1) << 23);
}

/** Partials of Σ q·x over 16 elements: q unsigned bytes in [0, 127], x int8 at p. */
@inline function dot16u(q: v128, p: usize): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(p), q, i32x4.splat(0));
  return i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q), v128.load8x8_s(p)),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q), v128.load8x8_s(p, 8)));
}

/**
 * Partials of Σ q·x over 16 elements: q signed int8 (never −128), x int8 in [−127, 127] at p. The
 * relaxed dot takes the sign of x onto q: q·x = (q ⊙ sign x)·|x| with |x| as the 7-bit operand.
 */
@inline function dot16s(q: v128, p: usize): v128 {
  const x = v128.load(p);
  if (ASC_FEATURE_RELAXED_SIMD) {
    const m = i8x16.lt_s(x, i8x16.splat(0));
    return i32x4.relaxed_dot_i8x16_i7x16_add_s(i8x16.sub(v128.xor(q, m), m), i8x16.abs(x), i32x4.splat(0));
  }
  return i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q), i16x8.extend_low_i8x16_s(x)),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q), i16x8.extend_high_i8x16_s(x)));
}

/** val in the byte lanes where h & bit is set, else 0. */
@inline function hibit(h: v128, bit: i32, val: i32): v128 {
  return v128.and(i8x16.ne(v128.and(h, i8x16.splat(<i8>bit)), i8x16.splat(0)), i8x16.splat(<i8>val));
}

/** 6-bit scale (j < 8) or min (j ≥ 8, of sub-block j − 8) of the packed Q4_K/Q5_K scales at s. */
@inline function scaleMinK4(s: usize, j: i32): i32 {
  const m = j >= 8;
  const i = m ? j - 8 : j;
  if (i < 4) return <i32>load<u8>(s + i + (m ? 4 : 0)) & 63;
  const b = <i32>load<u8>(s + i + 4);
  return (m ? b >> 4 : b & 15) | ((<i32>load<u8>(s + i - (m ? 0 : 4)) >> 6) << 4);
}

/** Q3_K scale j (0–15) with its −32 offset. */
@inline function scaleQ3K(s: usize, j: i32): i32 {
  const lo = j < 8 ? <i32>load<u8>(s + j) & 15 : <i32>load<u8>(s + j - 8) >> 4;
  return (lo | (((<i32>load<u8>(s + 8 + (j & 3)) >> (2 * (j >> 2))) & 3) << 4)) - 32;
}

@inline function bsum(x: usize, g: i32): i32 {
  return <i32>load<i16>(x + 260 + (<usize>g << 1));
}

/** Σ_g c[g]·bsum[g] over the 16 sums of the Q8_K block x, c given as i16x8 lo (0–7) and hi (8–15). */
@inline function bsumDot(x: usize, lo: v128, hi: v128): i32 {
  return hsumI(i32x4.add(i32x4.dot_i16x8_s(v128.load(x + 260), lo), i32x4.dot_i16x8_s(v128.load(x + 276), hi)));
}

/** One weight super-block (w) × one Q8_K block (x): the block's term of the row sum. */
@inline function superBlock(dt: i32, w: usize, x: usize): f32 {
  const xs = x + 4, dx = load<f32>(x);
  let acc = i32x4.splat(0);
  if (dt == DT_Q4_K || dt == DT_Q5_K) {
    const five = dt == DT_Q5_K;
    const qs = w + (five ? 48 : 16), m4 = i8x16.splat(15);
    const h0 = five ? v128.load(w + 16) : i8x16.splat(0), h1 = five ? v128.load(w + 32) : i8x16.splat(0);
    // The 12 scale bytes as 8 scales (sc0: 0–3, sc1: 4–7) and 8 mins (mn0, mn1), one byte each.
    const a0 = load<u32>(w + 4), a1 = load<u32>(w + 8), a2 = load<u32>(w + 12);
    const sc0 = a0 & 0x3f3f3f3f, sc1 = (a2 & 0x0f0f0f0f) | (((a0 >> 6) & 0x03030303) << 4);
    const mn0 = a1 & 0x3f3f3f3f, mn1 = ((a2 >> 4) & 0x0f0f0f0f) | (((a1 >> 6) & 0x03030303) << 4);
    // Mins as i16 lanes, each twice (a min covers two sums of 16): Σ m·bsum in two i16 dots.
    const mn = i32x4.replace_lane(i32x4.replace_lane(i32x4.splat(0), 0, <i32>mn0), 1, <i32>mn1), z = i8x16.splat(0);
    const summ = bsumDot(x,
      i8x16.shuffle(mn, z, 0, 16, 0, 16, 1, 16, 1, 16, 2, 16, 2, 16, 3, 16, 3, 16),
      i8x16.shuffle(mn, z, 4, 16, 4, 16, 5, 16, 5, 16, 6, 16, 6, 16, 7, 16, 7, 16));
    for (let j = 0; j < 4; j++) {
      const q0 = v128.load(qs + (<usize>j << 5)), q1 = v128.load(qs + (<usize>j << 5), 16);
      let l0 = v128.and(q0, m4), l1 = v128.and(q1, m4), u0 = i8x16.shr_u(q0, 4), u1 = i8x16.shr_u(q1, 4);
      if (five) {
        l0 = v128.or(l0, hibit(h0, 1 << (2 * j), 16));
        l1 = v128.or(l1, hibit(h1, 1 << (2 * j), 16));
        u0 = v128.or(u0, hibit(h0, 2 << (2 * j), 16));
        u1 = v128.or(u1, hibit(h1, 2 << (2 * j), 16));
      }
      const p = xs + (<usize>j << 6);
      const lo = i32x4.add(dot16u(l0, p), dot16u(l1, p + 16));
      const hi = i32x4.add(dot16u(u0, p + 32), dot16u(u1, p + 48));
      const sc = (j < 2 ? sc0 : sc1) >> (16 * (j & 1));
      acc = i32x4.add(acc, i32x4.add(i32x4.mul(lo, i32x4.splat(<i32>(sc & 63))), i32x4.mul(hi, i32x4.splat(<i32>((sc >> 8) & 63)))));
    }
    return <f32>hsumI(acc) * (f16ToF32(load<u16>(w)) * dx) - <f32>summ * (f16ToF32(load<u16>(w + 2)) * dx);
  }
  if (dt == DT_Q2_K) {
    const mins = i8x16.shr_u(v128.load(w), 4);
    const summ = bsumDot(x, i16x8.extend_low_i8x16_u(mins), i16x8.extend_high_i8x16_u(mins));
    for (let g = 0; g < 16; g++) {
      const n = g >> 3, j = (g >> 1) & 3, h = g & 1;
      const q = v128.and(i8x16.shr_u(v128.load(w + 16 + 32 * n + 16 * h), 2 * j), i8x16.splat(3));
      acc = i32x4.add(acc, i32x4.mul(dot16u(q, xs + (<usize>g << 4)), i32x4.splat(<i32>load<u8>(w + g) & 15)));
    }
    return <f32>hsumI(acc) * (f16ToF32(load<u16>(w + 80)) * dx) - <f32>summ * (f16ToF32(load<u16>(w + 82)) * dx);
  }
  if (dt == DT_Q3_K) {
    let off = 0;
    for (let g = 0; g < 16; g++) {
      const n = g >> 3, j = (g >> 1) & 3, h = g & 1;
      const q = v128.or(
        v128.and(i8x16.shr_u(v128.load(w + 32 + 32 * n + 16 * h), 2 * j), i8x16.splat(3)),
        hibit(v128.load(w + 16 * h), 1 << (4 * n + j), 4));
      const sc = scaleQ3K(w + 96, g);
      acc = i32x4.add(acc, i32x4.mul(dot16u(q, xs + (<usize>g << 4)), i32x4.splat(sc)));
      off += sc * bsum(x, g);
    }
    return <f32>(hsumI(acc) - 4 * off) * (f16ToF32(load<u16>(w + 108)) * dx);
  }
  if (dt == DT_Q6_K) {
    const sv = v128.load(w + 192);
    const off = bsumDot(x, i16x8.extend_low_i8x16_s(sv), i16x8.extend_high_i8x16_s(sv));
    const m4 = i8x16.splat(15), m30 = i8x16.splat(0x30);
    for (let n = 0; n < 2; n++) {
      for (let h = 0; h < 2; h++) {
        const b = <usize>(64 * n + 16 * h);
        const L0 = v128.load(w + b), L1 = v128.load(w + b + 32), H = v128.load(w + 128 + 32 * n + 16 * h);
        const q0 = v128.or(v128.and(L0, m4), v128.and(i8x16.shl(H, 4), m30));
        const q1 = v128.or(v128.and(L1, m4), v128.and(i8x16.shl(H, 2), m30));
        const q2 = v128.or(i8x16.shr_u(L0, 4), v128.and(H, m30));
        const q3 = v128.or(i8x16.shr_u(L1, 4), v128.and(i8x16.shr_u(H, 2), m30));
        const g = 8 * n + h;
        const p = xs + (<usize>g << 4);
        const s0 = <i32>load<i8>(w + 192 + g), s1 = <i32>load<i8>(w + 194 + g);
        const s2 = <i32>load<i8>(w + 196 + g), s3 = <i32>load<i8>(w + 198 + g);
        acc = i32x4.add(acc, i32x4.add(i32x4.mul(dot16u(q0, p), i32x4.splat(s0)), i32x4.mul(dot16u(q1, p + 32), i32x4.splat(s1))));
        acc = i32x4.add(acc, i32x4.add(i32x4.mul(dot16u(q2, p + 64), i32x4.splat(s2)), i32x4.mul(dot16u(q3, p + 96), i32x4.splat(s3))));
      }
    }
    return <f32>(hsumI(acc) - 32 * off) * (f16ToF32(load<u16>(w + 208)) * dx);
  }
  // IQ4_XS
  const t = v128.load(KV), sh = <i32>load<u16>(w + 2);
  for (let ib = 0; ib < 8; ib++) {
    const q = v128.load(w + 8 + 16 * ib);
    const ls = (((<i32>load<u8>(w + 4 + (ib >> 1)) >> (4 * (ib & 1))) & 15) | (((sh >> (2 * ib)) & 3) << 4)) - 32;
    const p = xs + (<usize>ib << 5);
    const d = i32x4.add(dot16s(i8x16.swizzle(t, v128.and(q, i8x16.splat(15))), p), dot16s(i8x16.swizzle(t, i8x16.shr_u(q, 4)), p + 16));
    acc = i32x4.add(acc, i32x4.mul(d, i32x4.splat(ls)));
  }
  return <f32>hsumI(acc) * (f16ToF32(load<u16>(w)) * dx);
}

/** 16 in the byte lanes whose bit of the 16 bits (qh >> 16·half) is set, lane j for bit j. */
@inline function fifthBits(qh: u32, half: i32): v128 {
  const v = i32x4.splat(<i32>qh);
  const b = half ? i8x16.shuffle(v, v, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3) : i8x16.shuffle(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const m = i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  return v128.and(i8x16.ne(v128.and(b, m), i8x16.splat(0)), i8x16.splat(16));
}

/** One Q4_1 / Q5_0 / Q5_1 block (w) × one Q8_0 block (x): the block's term of the row sum. */
@inline function blockLegacy(dt: i32, w: usize, x: usize): f32 {
  const q = v128.load(w + (dt == DT_Q4_1 ? 4 : dt == DT_Q5_0 ? 6 : 8)), m4 = i8x16.splat(15);
  let lo = v128.and(q, m4), hi = i8x16.shr_u(q, 4);
  if (dt != DT_Q4_1) {
    const qh = load<u32>(w + (dt == DT_Q5_0 ? 2 : 4));
    lo = v128.or(lo, fifthBits(qh, 0));
    hi = v128.or(hi, fifthBits(qh, 1));
  }
  const dx = f16ToF32(load<u16>(x)), d = f16ToF32(load<u16>(w)) * dx;
  if (dt == DT_Q5_0) {
    const o = i8x16.splat(16);
    return d * <f32>hsumI(i32x4.add(dot16s(i8x16.sub(lo, o), x + 2), dot16s(i8x16.sub(hi, o), x + 18)));
  }
  const sumi = hsumI(i32x4.add(dot16u(lo, x + 2), dot16u(hi, x + 18)));
  const sumx = hsumI(i32x4.add(i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(v128.load(x + 2))),
    i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(v128.load(x + 18)))));
  return d * <f32>sumi + f16ToF32(load<u16>(w + 2)) * (dx * <f32>sumx);
}

/** One IQ4_NL / MXFP4 / Q4_1 / Q5_0 / Q5_1 block (w) × one Q8_0 block (x): the block's term of the row sum. */
@inline function block32(dt: i32, w: usize, x: usize): f32 {
  if (dt == DT_Q4_1 || dt == DT_Q5_0 || dt == DT_Q5_1) return blockLegacy(dt, w, x);
  const nl = dt == DT_IQ4_NL;
  const q = v128.load(w + (nl ? 2 : 1)), t = v128.load(KV + (nl ? 0 : 16));
  const s = i32x4.add(dot16s(i8x16.swizzle(t, v128.and(q, i8x16.splat(15))), x + 2), dot16s(i8x16.swizzle(t, i8x16.shr_u(q, 4)), x + 18));
  const dx = f16ToF32(load<u16>(x));
  const d = nl ? f16ToF32(load<u16>(w)) * dx : dx * e8m0Half(load<u8>(w));
  return d * <f32>hsumI(s);
}

@inline function matmulK(dt: i32, y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const small = isBlock32(dt);
  const nb = cols / blockElems(dt);
  const wbs = blockBytes(dt), xbs: usize = small ? 34 : 292;
  const wrb = <usize>nb * wbs, xrb = <usize>nb * xbs;
  for (let r = r0; r < r1; r++) {
    const wr = w + <usize>r * wrb;
    for (let b = 0; b < batch; b++) {
      const xr = xq + <usize>b * xrb;
      let s: f32 = 0;
      for (let k = 0; k < nb; k++) {
        const wb = wr + <usize>k * wbs, xb = xr + <usize>k * xbs;
        s += small ? block32(dt, wb, xb) : superBlock(dt, wb, xb);
      }
      store<f32>(y + ((<usize>b * rows + r) << 2), s);
    }
  }
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q2_K, X as quantizeActQ8K output. */
export function matmulQ2_K(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q2_K, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q3_K, X as quantizeActQ8K output. */
export function matmulQ3_K(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q3_K, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q4_K, X as quantizeActQ8K output. */
export function matmulQ4_K(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q4_K, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q5_K, X as quantizeActQ8K output. */
export function matmulQ5_K(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q5_K, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q6_K, X as quantizeActQ8K output. */
export function matmulQ6_K(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q6_K, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W IQ4_XS, X as quantizeActQ8K output. */
export function matmulIQ4_XS(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_IQ4_XS, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W IQ4_NL, X as GGUF Q8_0 blocks (quantizeRowsQ8_0 of X). */
export function matmulIQ4_NL(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_IQ4_NL, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W MXFP4, X as GGUF Q8_0 blocks (quantizeRowsQ8_0 of X). */
export function matmulMXFP4(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_MXFP4, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q4_1, X as GGUF Q8_0 blocks (quantizeRowsQ8_0 of X). */
export function matmulQ4_1(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q4_1, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q5_0, X as GGUF Q8_0 blocks (quantizeRowsQ8_0 of X). */
export function matmulQ5_0(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q5_0, y, xq, w, batch, rows, cols, r0, r1);
}

/** Rows [r0, r1) of Y = X·Wᵀ, W Q5_1, X as GGUF Q8_0 blocks (quantizeRowsQ8_0 of X). */
export function matmulQ5_1(y: usize, xq: usize, w: usize, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulK(DT_Q5_1, y, xq, w, batch, rows, cols, r0, r1);
}

/**
 * Q8_K blocks (292 B each, [batch, cols/256]) of X f32 [batch, cols], as ggml's quantize_row_q8_K_ref:
 * max = the first value of largest magnitude, iscale = −127/max, q = min(127, round-half-even(iscale·x)),
 * d = 1/iscale; bsums = Σq per 16. An all-zero block is all zero bytes.
 */
export function quantizeActQ8K(dst: usize, x: usize, batch: i32, cols: i32): void {
  const n = (<usize>batch * cols) >> 8;
  for (let i: usize = 0; i < n; i++) {
    const src = x + (i << 10), o = dst + i * 292;
    let amax: f32 = 0, mx: f32 = 0;
    for (let j = 0; j < 256; j++) {
      const v = load<f32>(src + (<usize>j << 2));
      if (abs(v) > amax) {
        amax = abs(v);
        mx = v;
      }
    }
    if (amax == 0) {
      memory.fill(o, 0, 292);
      continue;
    }
    const iscale: f32 = <f32>-127 / mx;
    const iv = f32x4.splat(iscale), top = i32x4.splat(127);
    for (let j = 0; j < 16; j++) {
      const p = src + (<usize>j << 6);
      const a = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p), iv))), top);
      const b = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 16), iv))), top);
      const c = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 32), iv))), top);
      const d = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(p, 48), iv))), top);
      v128.store(o + 4 + (<usize>j << 4), i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(a, b), i16x8.narrow_i32x4_s(c, d)));
      store<i16>(o + 260 + (<usize>j << 1), <i16>hsumI(i32x4.add(i32x4.add(a, b), i32x4.add(c, d))));
    }
    store<f32>(o, <f32>1 / iscale);
  }
}

/** Element j (0–31) of a 32-block's nibbles at q: j < 16 low nibble of byte j, else high nibble of byte j − 16. */
@inline function nib(q: usize, j: i32): i32 {
  return j < 16 ? <i32>load<u8>(q + j) & 15 : <i32>load<u8>(q + j - 16) >> 4;
}

/**
 * out f32[cols] = dequant(row at src)·scale for a K-quant dtype (ggml type id); each value is the f32
 * that ggml's dequantize_row gives, times scale.
 */
export function dequantRowK(out: usize, src: usize, dt: i32, cols: i32, scale: f32): void {
  const be = blockElems(dt), bs = blockBytes(dt);
  const nb = cols / be;
  for (let k = 0; k < nb; k++) {
    const w = src + <usize>k * bs, o = out + ((<usize>k * be) << 2);
    for (let e = 0; e < be; e++) {
      let v: f32;
      if (dt == DT_Q2_K) {
        // element e: group g = e/16, n = g/8, shift 2·((g/2)%4), byte 32n + 16(g%2) + e%16
        const g = e >> 4, n = g >> 3, j = (g >> 1) & 3;
        const sc = <i32>load<u8>(w + g);
        const q = (<i32>load<u8>(w + 16 + 32 * n + 16 * (g & 1) + (e & 15)) >> (2 * j)) & 3;
        v = f16ToF32(load<u16>(w + 80)) * <f32>(sc & 15) * <f32>q - f16ToF32(load<u16>(w + 82)) * <f32>(sc >> 4);
      } else if (dt == DT_Q3_K) {
        const g = e >> 4, n = g >> 3, j = (g >> 1) & 3, l = 16 * (g & 1) + (e & 15);
        const q = ((<i32>load<u8>(w + 32 + 32 * n + l) >> (2 * j)) & 3) - ((<i32>load<u8>(w + l) & (1 << (4 * n + j))) != 0 ? 0 : 4);
        v = f16ToF32(load<u16>(w + 108)) * <f32>scaleQ3K(w + 96, g) * <f32>q;
      } else if (dt == DT_Q4_K || dt == DT_Q5_K) {
        const sb = e >> 5, j = sb >> 1, l = e & 31;
        const byte = <i32>load<u8>(w + (dt == DT_Q5_K ? 48 : 16) + 32 * j + l);
        let q = sb & 1 ? byte >> 4 : byte & 15;
        if (dt == DT_Q5_K && (<i32>load<u8>(w + 16 + l) & (1 << sb)) != 0) q += 16;
        v = f16ToF32(load<u16>(w)) * <f32>scaleMinK4(w + 4, sb) * <f32>q - f16ToF32(load<u16>(w + 2)) * <f32>scaleMinK4(w + 4, sb + 8);
      } else if (dt == DT_Q6_K) {
        const n = e >> 7, r = e & 127, c = r >> 5, l = r & 31;
        const lq = <i32>load<u8>(w + 64 * n + l + (c & 1) * 32);
        const hq = (<i32>load<u8>(w + 128 + 32 * n + l) >> (2 * c)) & 3;
        const q = ((c < 2 ? lq & 15 : lq >> 4) | (hq << 4)) - 32;
        v = f16ToF32(load<u16>(w + 208)) * <f32>load<i8>(w + 192 + 8 * n + (l >> 4) + 2 * c) * <f32>q;
      } else if (dt == DT_Q8_K) {
        v = load<f32>(w) * <f32>load<i8>(w + 4 + e);
      } else if (dt == DT_IQ4_XS) {
        const ib = e >> 5;
        const ls = (((<i32>load<u8>(w + 4 + (ib >> 1)) >> (4 * (ib & 1))) & 15) | (((<i32>load<u16>(w + 2) >> (2 * ib)) & 3) << 4)) - 32;
        v = f16ToF32(load<u16>(w)) * <f32>ls * <f32>load<i8>(KV + nib(w + 8 + 16 * ib, e & 31));
      } else if (dt == DT_Q4_1) {
        v = f16ToF32(load<u16>(w)) * <f32>nib(w + 4, e) + f16ToF32(load<u16>(w + 2));
      } else if (dt == DT_Q5_0 || dt == DT_Q5_1) {
        const five1 = dt == DT_Q5_1;
        const q = nib(w + (five1 ? 8 : 6), e) | (<i32>((load<u32>(w + (five1 ? 4 : 2)) >> <u32>e) & 1) << 4);
        v = five1 ? f16ToF32(load<u16>(w)) * <f32>q + f16ToF32(load<u16>(w + 2)) : f16ToF32(load<u16>(w)) * <f32>(q - 16);
      } else if (dt == DT_IQ4_NL) {
        v = f16ToF32(load<u16>(w)) * <f32>load<i8>(KV + nib(w + 2, e));
      } else {
        v = e8m0Half(load<u8>(w)) * <f32>load<i8>(KV + 16 + nib(w + 1, e));
      }
      store<f32>(o + (<usize>e << 2), v * scale);
    }
  }
}

/** Σ a[i]·b[i] over n f32 (n % 32 == 0), eight lanes of partial sums. */
@inline function dotF32(a: usize, b: usize, n: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  for (let c = 0; c < n; c += 8) {
    const o = <usize>c << 2;
    s0 = f32x4.add(s0, f32x4.mul(v128.load(a + o), v128.load(b + o)));
    s1 = f32x4.add(s1, f32x4.mul(v128.load(a + o, 16), v128.load(b + o, 16)));
  }
  const s = f32x4.add(s0, s1);
  return (f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1)) + (f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3));
}

/**
 * Rows [r0, r1) of Y = X·Wᵀ with f32 X and W of K-quant dtype dt: each weight row is dequantized
 * into tmp (cols f32, private to the caller) and multiplied in f32.
 */
export function matmulKExact(y: usize, x: usize, w: usize, tmp: usize, dt: i32, batch: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const wrb = <usize>(cols / blockElems(dt)) * blockBytes(dt);
  for (let r = r0; r < r1; r++) {
    dequantRowK(tmp, w + <usize>r * wrb, dt, cols, 1);
    for (let b = 0; b < batch; b++) store<f32>(y + ((<usize>b * rows + r) << 2), dotF32(tmp, x + ((<usize>b * cols) << 2), cols));
  }
}
