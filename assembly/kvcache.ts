// Quantized KV cache rows: their layout, the append that writes them (quantizeKvRows), and the
// widening through which attention reads them (stageRows).
//
// A cache row (one position) holds each kv head as ceil(D/32) GGUF blocks (quant.ts): Q8_0 (34 B:
// f16 d, 32 int8) or Q4_0 (18 B: f16 d, 16 bytes; element j in the low nibble of byte j, element
// j+16 in the high nibble, value (q − 8)·d). A head whose D is not a multiple of 32 ends in a block
// padded with zeros; the row is padded with zero bytes to a multiple of 4. Attention (attention.ts)
// reads the blocks in place, widening four rows at a time into a small staging tile (n·d per value,
// as ggml's dequantize_row), so the cache itself is never copied out as f32.
//
// Readers take the format as a type parameter C (i8: Q8_0, u8: Q4_0); attention.ts instantiates its
// cache walkers once for quantized caches and selects the format at run time (kvType), per row.
import { f16ToF32, f32ToF16, quantBlockQ4_0, quantBlockQ8_0 } from './quant';

export const KV_Q8_0 = 1;
export const KV_Q4_0 = 2;

/** The format of the quantized cache the running attention call reads (KV_Q8_0 or KV_Q4_0). */
export let kvType: i32 = KV_Q8_0;

/** Bytes of one block of format C. */
@inline function blockBytes<C>(): usize {
  return isSigned<C>() ? 34 : 18;
}

/** Bytes of one head of D values in a cache row of format kvType. */
@inline export function kvHeadBytes(D: i32): usize {
  return <usize>((D + 31) >> 5) * (kvType == KV_Q8_0 ? 34 : 18);
}

/** Values i … i+3 (i % 4 == 0, i + 4 ≤ 32) of the block at blk, as f32x4 integers before the scale. */
@inline function group4<C>(blk: usize, i: i32): v128 {
  let b: v128;
  if (isSigned<C>()) {
    b = v128.load32_zero(blk + 2 + <usize>i);
  } else {
    const raw = v128.load32_zero(blk + 2 + <usize>(i & 15));
    b = i8x16.sub(v128.and(i < 16 ? raw : i8x16.shr_u(raw, 4), i8x16.splat(15)), i8x16.splat(8));
  }
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(b)));
}

/** Value i (< 32) of the block at blk as an integer before the scale. */
@inline function elem<C>(blk: usize, i: i32): f32 {
  if (isSigned<C>()) return <f32>load<i8>(blk + 2 + <usize>i);
  const b = <i32>load<u8>(blk + 2 + <usize>(i & 15));
  return <f32>(((i < 16 ? b : b >> 4) & 15) - 8);
}

@inline function scaleOf(blk: usize): f32 {
  return f16ToF32(load<u16>(blk));
}

/** Values a row of the staging tile holds: the largest head dimension of a quantized cache. */
export const STAGE_MAX = 1024;
/** Bytes between the rows of the staging tile. */
export const STAGE_ROW: usize = STAGE_MAX << 2;
/**
 * The staging tile: four widened cache rows. Attention runs on the calling thread in every build
 * (worker pools run matrix products only), so one static tile serves every call.
 */
export const stage: usize = memory.data(4 * STAGE_MAX * 4, 16);

/** Dequantizes n values of one quantized head row src (format C) into f32 at dst. */
@inline function dequantRowQ<C>(dst: usize, src: usize, n: i32): void {
  const bs = blockBytes<C>();
  const n4 = n & ~3;
  let i = 0;
  while (i < n4) {
    const blk = src + <usize>(i >> 5) * bs;
    const d = f32x4.splat(scaleOf(blk));
    const end = min(n4, (i | 31) + 1);
    if (end - i == 32) {
      let lo: v128, hi: v128;
      if (isSigned<C>()) {
        lo = v128.load(blk + 2);
        hi = v128.load(blk + 18);
      } else {
        const raw = v128.load(blk + 2), m = i8x16.splat(15), e = i8x16.splat(8);
        lo = i8x16.sub(v128.and(raw, m), e);
        hi = i8x16.sub(i8x16.shr_u(raw, 4), e);
      }
      const o = dst + (<usize>i << 2);
      const l0 = i16x8.extend_low_i8x16_s(lo), l1 = i16x8.extend_high_i8x16_s(lo);
      const h0 = i16x8.extend_low_i8x16_s(hi), h1 = i16x8.extend_high_i8x16_s(hi);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(l0)), d));
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(l0)), d), 16);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(l1)), d), 32);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(l1)), d), 48);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h0)), d), 64);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h0)), d), 80);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h1)), d), 96);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h1)), d), 112);
      i = end;
      continue;
    }
    for (; i < end; i += 4) v128.store(dst + (<usize>i << 2), f32x4.mul(group4<C>(blk, i & 31), d));
  }
  for (; i < n; i++) {
    const blk = src + <usize>(i >> 5) * bs;
    store<f32>(dst + (<usize>i << 2), elem<C>(blk, i & 31) * scaleOf(blk));
  }
}

/** Dequantizes n values of the head row at src (format kvType) into f32 at dst. */
function stageRow(dst: usize, src: usize, n: i32): void {
  if (kvType == KV_Q8_0) dequantRowQ<i8>(dst, src, n);
  else dequantRowQ<u8>(dst, src, n);
}

/** Widens the first n (1 … 4) of the head rows r0 … r3 (D values each) into rows 0 … n−1 of the tile. */
@inline export function stageRows(r0: usize, r1: usize, r2: usize, r3: usize, n: i32, D: i32): void {
  stageRow(stage, r0, D);
  if (n > 1) stageRow(stage + STAGE_ROW, r1, D);
  if (n > 2) stageRow(stage + 2 * STAGE_ROW, r2, D);
  if (n > 3) stageRow(stage + 3 * STAGE_ROW, r3, D);
}

/** roundf: to the nearest integer, ties away from zero (as ggml's quantizers). */
@inline function roundAway(x: f32): f32 {
  const a = abs(x);
  let t = floor(a);
  if (a - t >= 0.5) t += 1;
  return x < 0 ? -t : t;
}

/**
 * One block of the t < 32 values at s (a head's last, partial block), padded with zeros, with the
 * rounding of quantBlockQ8_0 / quantBlockQ4_0 (a zero quantizes to 0, in Q4_0 to the nibble 8).
 */
function quantPartialBlock(o: usize, s: usize, t: i32, q8: bool): void {
  let amax: f32 = 0, mx: f32 = 0;
  for (let j = 0; j < t; j++) {
    const v = load<f32>(s + (<usize>j << 2));
    if (amax < abs(v)) {
      amax = abs(v);
      mx = v;
    }
  }
  if (q8) {
    const d: f32 = amax / 127;
    const id: f32 = d != 0 ? <f32>1 / d : 0;
    store<u16>(o, <u16>f32ToF16(d));
    for (let j = 0; j < 32; j++) store<i8>(o + 2 + <usize>j, j < t ? <i8><i32>roundAway(load<f32>(s + (<usize>j << 2)) * id) : 0);
    return;
  }
  const d: f32 = mx / <f32>-8;
  const id: f32 = d != 0 ? <f32>1 / d : 0;
  store<u16>(o, <u16>f32ToF16(d));
  for (let j = 0; j < 16; j++) {
    const lo = j < t ? min(15, <i32>(load<f32>(s + (<usize>j << 2)) * id + 8.5)) : 8;
    const hi = j + 16 < t ? min(15, <i32>(load<f32>(s + (<usize>(j + 16) << 2)) * id + 8.5)) : 8;
    store<u8>(o + 2 + <usize>j, <u8>(lo | (hi << 4)));
  }
}

/**
 * Writes `rows` cache rows: row r of src (f32, srcStride floats apart; `heads` heads of D values)
 * becomes dstStride bytes at dst + r·dstStride, each head as its Q8_0 (type KV_Q8_0) or Q4_0
 * (KV_Q4_0) blocks, the row's bytes past its last head zeroed. Whole blocks round exactly as
 * quantizeRowsQ8_0 / quantizeRowsQ4_0.
 */
export function quantizeKvRows(dst: usize, src: usize, rows: i32, heads: i32, D: i32, srcStride: i32, dstStride: i32, type: i32): void {
  const q8 = type == KV_Q8_0;
  const bs: usize = q8 ? 34 : 18;
  const nb = (D + 31) >> 5, full = D >> 5;
  const hb = <usize>nb * bs;
  const used = <usize>heads * hb;
  for (let r = 0; r < rows; r++) {
    const row = dst + <usize>r * <usize>dstStride;
    for (let h = 0; h < heads; h++) {
      const s = src + ((<usize>r * <usize>srcStride + <usize>h * <usize>D) << 2);
      const o = row + <usize>h * hb;
      for (let b = 0; b < full; b++) {
        if (q8) quantBlockQ8_0(o + <usize>b * bs, s + (<usize>b << 7));
        else quantBlockQ4_0(o + <usize>b * bs, s + (<usize>b << 7));
      }
      if (full < nb) quantPartialBlock(o + <usize>full * bs, s + (<usize>full << 7), D - (full << 5), q8);
    }
    if (<usize>dstStride > used) memory.fill(row + used, 0, <usize>dstStride - used);
  }
}
