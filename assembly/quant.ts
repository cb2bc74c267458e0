// Block quantization (GGUF Q8_0 / Q4_0), half-precision conversions and row dequantization.
//
// Q8_0 block (34 B): f16 d, then 32 int8 q;            value = q·d
// Q4_0 block (18 B): f16 d, then 16 bytes; byte j holds element j in its low nibble and element
//                    j+16 in its high nibble;          value = (q − 8)·d
// The quantizers reproduce ggml's reference rounding (quantize_row_q8_0_ref / quantize_row_q4_0_ref)
// byte for byte: every step is one IEEE f32 operation in the same order, and d is stored as the
// round-to-nearest-even f16 of the f32 scale.

/** 2^112: rescales an f16 bit pattern placed in the f32 exponent/mantissa fields to its f32 value. */
const TWO112: f32 = reinterpret<f32>(0x77800000);

export const DT_F32 = 0;
export const DT_F16 = 1;
export const DT_BF16 = 2;
export const DT_Q8_0 = 3;
export const DT_Q4_0 = 4;

/**
 * Vector constants kept in static memory: V8 (11.3) rebuilds a splatted constant with three
 * instructions at every use, while a load from here folds into the using instruction.
 * Offsets: 0 f16 magnitude+sign mask, 16 2^112, 32 f16 exponent field (in the high half),
 * 48 f32 exponent field, 64 i16 ones, 80 low-nibble mask, 96 f16 exponent field (i16 lanes).
 */
export const KC: usize = memory.data<i32>([
  <i32>0x8fffe000, <i32>0x8fffe000, <i32>0x8fffe000, <i32>0x8fffe000,
  0x77800000, 0x77800000, 0x77800000, 0x77800000,
  0x7c000000, 0x7c000000, 0x7c000000, 0x7c000000,
  0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000,
  0x00010001, 0x00010001, 0x00010001, 0x00010001,
  0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f,
  0x7c007c00, 0x7c007c00, 0x7c007c00, 0x7c007c00,
], 16);

/**
 * f16 → f32 for four lanes that hold the half in bits 16..31 (bits 0..15 zero).
 * Shifting right by 3 (arithmetic) lines the half's exponent and mantissa up with the f32 fields
 * shifted by the bias difference 112, so one multiply by 2^112 rebiases normals and turns
 * subnormals into exactly m·2^-24. Exponent 31 (inf/NaN) would come out as 2^16·(1.m); setting
 * all exponent bits of those lanes keeps the mantissa and gives inf/NaN.
 */
@inline export function f16HiToF32(x: v128): v128 {
  const b = v128.and(i32x4.shr_s(x, 3), v128.load(KC));
  const v = f32x4.mul(b, v128.load(KC, 16));
  const e = v128.load(KC, 32);
  return v128.or(v, v128.and(i32x4.eq(v128.and(x, e), e), v128.load(KC, 48)));
}

/** Four f16 at p (8 bytes) as f32x4. */
@inline export function loadF16x4(p: usize): v128 {
  return f16HiToF32(i32x4.shl(v128.load16x4_u(p), 16));
}

/** True when none of the eight f16 at p is inf or NaN (exponent 31), so loadF16x4Finite applies. */
@inline export function f16Finite8(p: usize): bool {
  const e = v128.load(KC, 96);
  return !v128.any_true(i16x8.eq(v128.and(v128.load(p), e), e));
}

/** Four finite f16 at p as f32x4: the sign-extended half shifted left by 13 is the f32 pattern / 2^112. */
@inline export function loadF16x4Finite(p: usize): v128 {
  return f32x4.mul(v128.and(i32x4.shl(v128.load16x4_s(p), 13), v128.load(KC)), v128.load(KC, 16));
}

/** Four bf16 at p as f32x4: bf16 is the top half of an f32. */
@inline export function loadBF16x4(p: usize): v128 {
  return i32x4.shl(v128.load16x4_u(p), 16);
}

@inline export function f16ToF32(h: u32): f32 {
  const b = (h & 0x7fff) << 13;
  let v = reinterpret<f32>(b) * TWO112;
  if ((h & 0x7c00) == 0x7c00) v = reinterpret<f32>(b | 0x7f800000);
  return reinterpret<f32>(reinterpret<u32>(v) | ((h & 0x8000) << 16));
}

/** f32 → f16 bits, round to nearest even (what F16C's vcvtps2ph and ggml's fp32_to_fp16 give). */
export function f32ToF16(f: f32): u32 {
  const x = reinterpret<u32>(f);
  const sign = (x >> 16) & 0x8000;
  const ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return sign | 0x7e00;
  if (ax >= 0x47800000) return sign | 0x7c00;
  if (ax < 0x38800000) {
    // Below 2^-14 the result is subnormal: q = rne(|f| / 2^-24), with |f| = mant·2^(e−150).
    if (ax < 0x33000000) return sign;
    const e = ax >> 23;
    const mant = (ax & 0x7fffff) | 0x800000;
    const shift = 126 - e;
    let q = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const half: u32 = 1 << (shift - 1);
    if (rem > half || (rem == half && (q & 1) != 0)) q++;
    return sign | q;
  }
  // Normal: rebias the exponent by 127 − 15 and round 23 → 10 mantissa bits; a carry out of the
  // mantissa correctly bumps the exponent (up to inf at 65520).
  let h = (ax - 0x38000000) >> 13;
  const rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1) != 0)) h++;
  return sign | h;
}

/** Rounds each f32 lane to the nearest integer, ties away from zero (C roundf), as i32x4. */
@inline function roundAway(v: v128): v128 {
  const a = f32x4.abs(v);
  const t = f32x4.trunc(a);
  const r = f32x4.add(t, v128.and(f32x4.ge(f32x4.sub(a, t), f32x4.splat(0.5)), f32x4.splat(1.0)));
  return i32x4.trunc_sat_f32x4_s(v128.or(r, v128.and(v, i32x4.splat(<i32>0x80000000))));
}

@inline function absMax32(src: usize): f32 {
  let m = f32x4.max(f32x4.abs(v128.load(src)), f32x4.abs(v128.load(src, 16)));
  m = f32x4.max(m, f32x4.max(f32x4.abs(v128.load(src, 32)), f32x4.abs(v128.load(src, 48))));
  m = f32x4.max(m, f32x4.max(f32x4.abs(v128.load(src, 64)), f32x4.abs(v128.load(src, 80))));
  m = f32x4.max(m, f32x4.max(f32x4.abs(v128.load(src, 96)), f32x4.abs(v128.load(src, 112))));
  return max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
}

/** q = roundf(x·id) for 32 f32 at src → 32 int8 at dst; returns Σq. */
@inline function quantBlock8(dst: usize, src: usize, id: f32): i32 {
  const iv = f32x4.splat(id);
  const q0 = roundAway(f32x4.mul(v128.load(src), iv)), q1 = roundAway(f32x4.mul(v128.load(src, 16), iv));
  const q2 = roundAway(f32x4.mul(v128.load(src, 32), iv)), q3 = roundAway(f32x4.mul(v128.load(src, 48), iv));
  const q4 = roundAway(f32x4.mul(v128.load(src, 64), iv)), q5 = roundAway(f32x4.mul(v128.load(src, 80), iv));
  const q6 = roundAway(f32x4.mul(v128.load(src, 96), iv)), q7 = roundAway(f32x4.mul(v128.load(src, 112), iv));
  v128.store(dst, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
  v128.store(dst, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7)), 16);
  const s = i32x4.add(i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3)), i32x4.add(i32x4.add(q4, q5), i32x4.add(q6, q7)));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
}

/**
 * Activation quantization for the integer matmul paths: each 32-block of each X row becomes 32 int8
 * (d = amax/127 kept in f32, q = roundf(x/d), so q ∈ [−127, 127]). Layouts: xq int8 [batch, cols];
 * xd f32 [cols/32, batch] (block-major, so a tile of X rows reads its scales with one load);
 * xs i32 [cols/32, batch] = Σq of each block (the Q4_0 kernels fold the −8 offset through it).
 */
export function quantizeActQ8(xq: usize, xd: usize, xs: usize, x: usize, batch: i32, cols: i32): void {
  const nb = cols >> 5;
  for (let b = 0; b < batch; b++) {
    for (let k = 0; k < nb; k++) {
      const e = <usize>b * cols + (<usize>k << 5);
      const src = x + (e << 2);
      const amax = absMax32(src);
      const d: f32 = amax / 127;
      const id: f32 = d != 0 ? <f32>1 / d : 0;
      const s = quantBlock8(xq + e, src, id);
      const o = (<usize>k * batch + b) << 2;
      store<f32>(xd + o, d);
      store<i32>(xs + o, s);
    }
  }
}

/** One GGUF Q8_0 block (34 B at o) of the 32 f32 at s. */
@inline export function quantBlockQ8_0(o: usize, s: usize): void {
  const d: f32 = absMax32(s) / 127;
  const id: f32 = d != 0 ? <f32>1 / d : 0;
  store<u16>(o, <u16>f32ToF16(d));
  quantBlock8(o + 2, s, id);
}

/** GGUF Q8_0 of src f32 [rows, cols] into dst (rows·cols/32 blocks of 34 B); cols % 32 == 0. */
export function quantizeRowsQ8_0(dst: usize, src: usize, rows: i32, cols: i32): void {
  const n = (<usize>rows * cols) >> 5;
  for (let i: usize = 0; i < n; i++) quantBlockQ8_0(dst + i * 34, src + (i << 7));
}

/** q = min(15, trunc(x·id + 8.5)) for 16 f32 as i32x4 ×4 packed to 16 bytes (values 0..15). */
@inline function q4Half(src: usize, iv: v128): v128 {
  const h = f32x4.splat(8.5), m = i32x4.splat(15);
  const a = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(v128.load(src), iv), h)), m);
  const b = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(v128.load(src, 16), iv), h)), m);
  const c = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(v128.load(src, 32), iv), h)), m);
  const e = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(v128.load(src, 48), iv), h)), m);
  return i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_s(a, b), i16x8.narrow_i32x4_s(c, e));
}

/**
 * One GGUF Q4_0 block (18 B at o) of the 32 f32 at s. The scale comes from the first element of
 * largest magnitude, with its sign: d = max / −8.
 */
@inline export function quantBlockQ4_0(o: usize, s: usize): void {
  let amax: f32 = 0, mx: f32 = 0;
  for (let j = 0; j < 32; j++) {
    const v = load<f32>(s + (<usize>j << 2));
    if (amax < abs(v)) {
      amax = abs(v);
      mx = v;
    }
  }
  const d: f32 = mx / <f32>-8;
  const id: f32 = d != 0 ? <f32>1 / d : 0;
  store<u16>(o, <u16>f32ToF16(d));
  const iv = f32x4.splat(id);
  v128.store(o + 2, v128.or(q4Half(s, iv), i8x16.shl(q4Half(s + 64, iv), 4)));
}

/** GGUF Q4_0 of src f32 [rows, cols] into dst (18-byte blocks); cols % 32 == 0. */
export function quantizeRowsQ4_0(dst: usize, src: usize, rows: i32, cols: i32): void {
  const n = (<usize>rows * cols) >> 5;
  for (let i: usize = 0; i < n; i++) quantBlockQ4_0(dst + i * 18, src + (i << 7));
}

/** i8x16 → four f32x4 (part 0..3: lanes 0–3, 4–7, 8–11, 12–15). */
@inline export function i8ToF32(v: v128, part: i32): v128 {
  const h = part < 2 ? i16x8.extend_low_i8x16_s(v) : i16x8.extend_high_i8x16_s(v);
  return f32x4.convert_i32x4_s((part & 1) == 0 ? i32x4.extend_low_i16x8_s(h) : i32x4.extend_high_i16x8_s(h));
}

/** Stores 16 values (v·d)·scale given as int8 lanes. */
@inline function storeScaled16(out: usize, v: v128, d: v128, s: v128): void {
  v128.store(out, f32x4.mul(f32x4.mul(i8ToF32(v, 0), d), s));
  v128.store(out, f32x4.mul(f32x4.mul(i8ToF32(v, 1), d), s), 16);
  v128.store(out, f32x4.mul(f32x4.mul(i8ToF32(v, 2), d), s), 32);
  v128.store(out, f32x4.mul(f32x4.mul(i8ToF32(v, 3), d), s), 48);
}

/**
 * out f32[cols] = dequant(row at src) · scale for dtype DT_*; for q8_0/q4_0 each value is
 * (q·d)·scale, as ggml's dequantize_row times the scale.
 */
export function dequantRow(out: usize, src: usize, dtype: i32, cols: i32, scale: f32): void {
  const sv = f32x4.splat(scale);
  if (dtype == DT_Q8_0 || dtype == DT_Q4_0) {
    const nb = cols >> 5;
    const bs: usize = dtype == DT_Q8_0 ? 34 : 18;
    for (let k = 0; k < nb; k++) {
      const blk = src + <usize>k * bs, o = out + (<usize>k << 7);
      const d = f32x4.splat(f16ToF32(load<u16>(blk)));
      if (dtype == DT_Q8_0) {
        storeScaled16(o, v128.load(blk + 2), d, sv);
        storeScaled16(o + 64, v128.load(blk + 18), d, sv);
      } else {
        const v = v128.load(blk + 2), e = i8x16.splat(8);
        storeScaled16(o, i8x16.sub(v128.and(v, i8x16.splat(15)), e), d, sv);
        storeScaled16(o + 64, i8x16.sub(i8x16.shr_u(v, 4), e), d, sv);
      }
    }
    return;
  }
  let c = 0;
  for (; c + 4 <= cols; c += 4) {
    const o = out + (<usize>c << 2);
    if (dtype == DT_F32) v128.store(o, f32x4.mul(v128.load(src + (<usize>c << 2)), sv));
    else if (dtype == DT_F16) v128.store(o, f32x4.mul(loadF16x4(src + (<usize>c << 1)), sv));
    else v128.store(o, f32x4.mul(loadBF16x4(src + (<usize>c << 1)), sv));
  }
  for (; c < cols; c++) {
    let v: f32;
    if (dtype == DT_F32) v = load<f32>(src + (<usize>c << 2));
    else if (dtype == DT_F16) v = f16ToF32(load<u16>(src + (<usize>c << 1)));
    else v = reinterpret<f32>(<u32>load<u16>(src + (<usize>c << 1)) << 16);
    store<f32>(out + (<usize>c << 2), v * scale);
  }
}
