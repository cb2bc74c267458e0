import { FUSE_MADD } from './base';
// Lane-wise f32 transcendentals shared by the elementwise, attention and routing kernels.
// Not re-exported from index.ts: these take v128 and are inlined into the kernels.

/**
 * exp(x) per lane. Cody–Waite reduction x = n·ln2 + r (ln2 split in a short exact head and a tail),
 * degree-6 polynomial on |r| ≤ ln2/2, then 2^n through the exponent bits: about 2 ulp on
 * [-87.33, 88]. Below -87.33 (true value < 1.2e-38) the result is 0; above 88 it saturates at e^88.
 */
@inline export function expV(x: v128): v128 {
  const lo = f32x4.splat(-87.33654);
  const under = f32x4.lt(x, lo);
  let v = f32x4.min(f32x4.max(x, lo), f32x4.splat(88.0));
  const fx = f32x4.floor(f32x4.add(f32x4.mul(v, f32x4.splat(1.44269504088896341)), f32x4.splat(0.5)));
  v = f32x4.sub(v, f32x4.mul(fx, f32x4.splat(0.693359375)));
  v = f32x4.sub(v, f32x4.mul(fx, f32x4.splat(-2.12194440e-4)));
  const z = f32x4.mul(v, v);
  let y = f32x4.splat(1.9875691500e-4);
  y = f32x4.add(f32x4.mul(y, v), f32x4.splat(1.3981999507e-3));
  y = f32x4.add(f32x4.mul(y, v), f32x4.splat(8.3334519073e-3));
  y = f32x4.add(f32x4.mul(y, v), f32x4.splat(4.1665795894e-2));
  y = f32x4.add(f32x4.mul(y, v), f32x4.splat(1.6666665459e-1));
  y = f32x4.add(f32x4.mul(y, v), f32x4.splat(5.0000001201e-1));
  y = f32x4.add(f32x4.add(f32x4.mul(y, z), v), f32x4.splat(1.0));
  const pow2n = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(fx), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(y, pow2n), under);
}

/** 1 / (1 + e^-x) per lane. */
@inline export function sigmoidV(x: v128): v128 {
  const one = f32x4.splat(1.0);
  return f32x4.div(one, f32x4.add(one, expV(f32x4.neg(x))));
}

/**
 * tanh(x) per lane with small relative error everywhere: an odd Taylor polynomial (through x^13,
 * truncation < 2e-9 relative) for |x| < 0.4, else sign(x)·(1 − e^{-2|x|}) / (1 + e^{-2|x|}),
 * which has no cancellation there because e^{-2|x|} ≤ 0.45.
 */
@inline export function tanhV(x: v128): v128 {
  const ax = f32x4.abs(x);
  const t = expV(f32x4.mul(ax, f32x4.splat(-2.0)));
  const one = f32x4.splat(1.0);
  let big = f32x4.div(f32x4.sub(one, t), f32x4.add(one, t));
  big = v128.or(big, v128.and(x, i32x4.splat(0x80000000)));
  const x2 = f32x4.mul(x, x);
  let p = f32x4.splat(-0.0014558343870513183);
  p = f32x4.add(f32x4.mul(p, x2), f32x4.splat(0.0035921280365724810));
  p = f32x4.add(f32x4.mul(p, x2), f32x4.splat(-0.0088632355299021966));
  p = f32x4.add(f32x4.mul(p, x2), f32x4.splat(0.021869488536155203));
  p = f32x4.add(f32x4.mul(p, x2), f32x4.splat(-0.053968253968253968));
  p = f32x4.add(f32x4.mul(p, x2), f32x4.splat(0.13333333333333333));
  p = f32x4.add(f32x4.mul(p, x2), f32x4.splat(-0.33333333333333333));
  const small = f32x4.add(x, f32x4.mul(f32x4.mul(p, x2), x));
  return v128.bitselect(small, big, f32x4.lt(ax, f32x4.splat(0.4)));
}

@inline export function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

@inline export function hmax(v: v128): f32 {
  return max(max(f32x4.extract_lane(v, 0), f32x4.extract_lane(v, 1)), max(f32x4.extract_lane(v, 2), f32x4.extract_lane(v, 3)));
}

/** Σ a[i]·b[i] over n f32, four vector accumulators. */
@inline export function dot(a: usize, b: usize, n: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const o = <usize>i << 2;
    if (FUSE_MADD) {
      a0 = f32x4.relaxed_madd(v128.load(a + o), v128.load(b + o), a0);
      a1 = f32x4.relaxed_madd(v128.load(a + o, 16), v128.load(b + o, 16), a1);
      a2 = f32x4.relaxed_madd(v128.load(a + o, 32), v128.load(b + o, 32), a2);
      a3 = f32x4.relaxed_madd(v128.load(a + o, 48), v128.load(b + o, 48), a3);
    } else {
      a0 = f32x4.add(a0, f32x4.mul(v128.load(a + o), v128.load(b + o)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(a + o, 16), v128.load(b + o, 16)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(a + o, 32), v128.load(b + o, 32)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(a + o, 48), v128.load(b + o, 48)));
    }
  }
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    a0 = f32x4.add(a0, f32x4.mul(v128.load(a + o), v128.load(b + o)));
  }
  let s = hsum(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
  for (; i < n; i++) s += load<f32>(a + (<usize>i << 2)) * load<f32>(b + (<usize>i << 2));
  return s;
}
