/** First byte the host may use: everything below holds the module's static data. */
export function heapBase(): usize {
  return (__heap_base + 63) & ~63;
}

/** Bit 0: relaxed SIMD paths compiled in; bit 1: threads (shared memory). */
export function buildFeatures(): i32 {
  let f = 0;
  if (ASC_FEATURE_RELAXED_SIMD) f |= 1;
  if (ASC_FEATURE_THREADS) f |= 2;
  return f;
}

/**
 * Exercises the relaxed int8 dot with an accumulator carried over three blocks; the host compares
 * the result with the exact sum. Returns the computed sum (baseline builds compute it exactly).
 * V8 11.3's baseline compiler drops the accumulator of i32x4.relaxed_dot_i8x16_i7x16_add_s, so a
 * host on such an engine sees a wrong value here and falls back to the baseline build.
 */
export function relaxedDotProbe(a: usize, b: usize): i32 {
  let acc = i32x4.splat(0);
  for (let i = 0; i < 3; i++) {
    const o = <usize>i << 4;
    if (ASC_FEATURE_RELAXED_SIMD) {
      acc = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(a + o), v128.load(b + o), acc);
    } else {
      const av = v128.load(a + o), bv = v128.load(b + o);
      acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(av), i16x8.extend_low_i8x16_s(bv)));
      acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(av), i16x8.extend_high_i8x16_s(bv)));
    }
  }
  return i32x4.extract_lane(acc, 0) + i32x4.extract_lane(acc, 1) + i32x4.extract_lane(acc, 2) + i32x4.extract_lane(acc, 3);
}

/**
 * Whether f32 multiply-adds use f32x4.relaxed_madd. Engines differ in whether they fuse it (V8
 * emits an FMA, JavaScriptCore a multiply then an add), so fused f32 paths would give different
 * logits on Node/Deno and on Bun, and seeded generation would not give the same text on every
 * runtime. The relaxed build keeps only the integer relaxed dot, which is exact everywhere.
 */
export const FUSE_MADD: bool = false;
