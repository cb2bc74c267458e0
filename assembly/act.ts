// Elementwise activations, vector arithmetic and row softmax over f32 buffers.
// Every kernel accepts y == x (in place). n counts elements.
import { expV, sigmoidV, tanhV, hmax } from './vmath';

// HF ACT2FN "silu": x·sigmoid(x).
export function siluF32(y: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const v = v128.load(x + o);
    v128.store(y + o, f32x4.mul(v, sigmoidV(v)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const v = load<f32>(x + o);
    store<f32>(y + o, v / (1 + Mathf.exp(-v)));
  }
}

export function sigmoidF32(y: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, sigmoidV(v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, 1 / (1 + Mathf.exp(-load<f32>(x + o))));
  }
}

// silu(gate)·up (LLaMA-style MLP, HF `act_fn(gate_proj(x)) * up_proj(x)`).
export function swigluF32(y: usize, gate: usize, up: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(gate + o);
    v128.store(y + o, f32x4.mul(f32x4.mul(g, sigmoidV(g)), v128.load(up + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(gate + o);
    store<f32>(y + o, (g / (1 + Mathf.exp(-g))) * load<f32>(up + o));
  }
}

// gelu_pytorch_tanh: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), evaluated as x·sigmoid(2u) which is the
// same function without the cancellation of 1 + tanh(u) for negative u.
@inline function geluTanhV(v: v128): v128 {
  const u = f32x4.mul(f32x4.splat(1.5957691216057308), f32x4.add(v, f32x4.mul(f32x4.splat(0.044715), f32x4.mul(v, f32x4.mul(v, v)))));
  return f32x4.mul(v, sigmoidV(u));
}

@inline function geluTanhS(v: f32): f32 {
  const u: f32 = <f32>1.5957691216057308 * (v + <f32>0.044715 * v * v * v);
  return v / (1 + Mathf.exp(-u));
}

// R(z) = erfc(z)·e^(z²) on [0.5, 6): 11 pieces of width 0.5, each a degree-8 polynomial in
// t = (z − centre)·4 (Chebyshev fits to 40-digit mpmath values; < 4e-11 relative).
const ERFC_R: usize = memory.data<f64>([
  0.5069376502938046, -0.09199317278552756, 0.014434883189002828, -0.00202869017880766, 0.00026090082003933396, -3.114352631557647e-05, 3.4878382285710684e-06, -3.7751357428193237e-07, 3.80326291472561e-08,
  0.36782291645246357, -0.05220546896893911, 0.006674723213418995, -0.0007846608333139009, 8.598193250846614e-05, -8.867713625928e-06, 8.673441420314772e-07, -8.233238850155804e-08, 7.362426539312393e-09,
  0.2849722347374555, -0.03274408637403378, 0.003485226879490882, -0.000347812486762376, 3.2829379514646685e-05, -2.949950846536184e-06, 2.5369076045979605e-07, -2.125975196566023e-08, 1.6951710797701355e-09,
  0.23108725873039612, -0.022121625701082292, 0.001999539212961079, -0.00017190721404243377, 1.4136702264433905e-05, -1.1168694039585553e-06, 8.508701281063973e-08, -6.340029284310477e-09, 4.5318621356898003e-10,
  0.19366209627906977, -0.01580940938985453, 0.0012349120616553689, -9.272403369380243e-05, 6.717117156322402e-06, -4.7087906080023636e-07, 3.2025642951153615e-08, -2.1372338587951754e-09, 1.3774137070731626e-10,
  0.1663353484268222, -0.01179985058019863, 0.0008085806801738747, -5.367924032877361e-05, 3.4609554986585924e-06, -2.1716597426138803e-07, 1.3285904001150747e-08, -7.997357335099898e-10, 4.674307653663223e-11,
  0.1455897212750387, -0.009114064383148652, 0.0005549222204526286, -3.292629527424436e-05, 1.9071187201188456e-06, -1.0798632832820501e-07, 5.9853228543269725e-09, -3.2716168507352823e-10, 1.7443551898406878e-11,
  0.12934527478598795, -0.00723608285364162, 0.0003957416421163567, -2.1186455895806942e-05, 1.1116217161880338e-06, -5.7221595580423505e-08, 2.8925679750070296e-09, -1.444755984378567e-10, 7.062971316963207e-12,
  0.11630270721024728, -0.0058758621495363225, 0.00029133289806093675, -1.4189045328772083e-05, 6.794074392395174e-07, -3.200737017476871e-08, 1.4846384106916821e-09, -6.815057983078707e-11, 3.0691627814247003e-12,
  0.1056127354688918, -0.004861361168034852, 0.00022025943375728467, -9.829710825883586e-06, 4.3235959369137476e-07, -1.875388339588874e-08, 8.026216372232145e-10, -3.4040420228063e-11, 1.419509184387605e-12,
  0.09669877816971396, -0.004085804535949398, 0.00017032961517802602, -7.009307800238998e-06, 2.8486050401398414e-07, -1.1437856027311598e-08, 4.539281666955455e-10, -1.7874547156415107e-11, 6.946487047029377e-13,
]);

// 2/√π · (−1)^n / (n!·(2n+1)): erf(z) = z · Σ_n ERF_T[n]·z^(2n), 10 terms (< 1e-14 for |z| < 0.5).
const ERF_T: usize = memory.data<f64>([1.1283791670955126, -0.37612638903183754, 0.11283791670955128, -0.026866170645131252, 0.005223977625442188, -0.0008548327023450853, 0.00012055332981789665, -1.4925650358406252e-05, 1.6462114365889248e-06, -1.6365844691234924e-07]);

@inline function erfSmall(z: f64): f64 {
  const z2 = z * z;
  let p = load<f64>(ERF_T + 72);
  for (let n = 8; n >= 0; n--) p = p * z2 + load<f64>(ERF_T + (<usize>n << 3));
  return z * p;
}

/**
 * erfc(z) for z ≥ 0.5 in f64 (relative error < 1e-10): e^(−z²)·R(z) with the fitted R below 6,
 * and the Laplace continued fraction erfc(z) = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + …))))
 * from depth 10 above (converged to f64 rounding there).
 */
function erfcPos(z: f64): f64 {
  if (z > 27) return 0;
  const ez = Math.exp(-z * z);
  if (z >= 6) {
    let f = z;
    for (let k = 10; k >= 1; k--) f = z + (<f64>k * 0.5) / f;
    return ez / (1.7724538509055160 * f);
  }
  const i = <i32>((z - 0.5) * 2);
  const t = (z - (0.75 + 0.5 * <f64>i)) * 4;
  const c = ERFC_R + <usize>(i * 72);
  let p = load<f64>(c + 64);
  for (let n = 7; n >= 0; n--) p = p * t + load<f64>(c + (<usize>n << 3));
  return ez * p;
}

/** Exact (erf) GELU: 0.5·x·(1 + erf(x/√2)), through erfc(−x/√2) for x ≤ −√2/2 so the tail keeps its digits. */
@inline function geluErf(v: f32): f32 {
  const x = <f64>v;
  const z = x * 0.7071067811865476;
  let c: f64;
  if (Math.abs(z) < 0.5) c = 1 + erfSmall(z);
  else c = z > 0 ? 2 - erfcPos(z) : erfcPos(-z);
  return <f32>(0.5 * x * c);
}

export function geluF32(y: usize, x: usize, n: i32, approxTanh: i32): void {
  let i = 0;
  if (approxTanh) {
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(y + o, geluTanhV(v128.load(x + o)));
    }
    for (; i < n; i++) store<f32>(y + (<usize>i << 2), geluTanhS(load<f32>(x + (<usize>i << 2))));
  } else {
    for (; i < n; i++) store<f32>(y + (<usize>i << 2), geluErf(load<f32>(x + (<usize>i << 2))));
  }
}

// gelu(gate)·up (Gemma MLP).
export function gegluF32(y: usize, gate: usize, up: usize, n: i32, approxTanh: i32): void {
  let i = 0;
  if (approxTanh) {
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(y + o, f32x4.mul(geluTanhV(v128.load(gate + o)), v128.load(up + o)));
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      store<f32>(y + o, geluTanhS(load<f32>(gate + o)) * load<f32>(up + o));
    }
  } else {
    for (; i < n; i++) {
      const o = <usize>i << 2;
      store<f32>(y + o, geluErf(load<f32>(gate + o)) * load<f32>(up + o));
    }
  }
}

// Squared ReLU (Primer; Nemotron-H "relu2", RWKV channel mix).
export function relu2F32(y: usize, x: usize, n: i32): void {
  const zero = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const r = f32x4.max(v128.load(x + o), zero);
    v128.store(y + o, f32x4.mul(r, r));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const r = max<f32>(load<f32>(x + o), 0);
    store<f32>(y + o, r * r);
  }
}

// torch.nn.functional.softplus (beta 1, threshold 20): x above 20 passes through, else log1p(exp(x)).
export function softplusF32(y: usize, x: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    const v = load<f32>(x + o);
    store<f32>(y + o, v > 20 ? v : <f32>Math.log1p(Math.exp(<f64>v)));
  }
}

export function mulF32(y: usize, a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.mul(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(a + o) * load<f32>(b + o));
  }
}

export function addF32(y: usize, a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(a + o) + load<f32>(b + o));
  }
}

// y += s·x
export function addScaledF32(y: usize, x: usize, s: f32, n: i32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.add(v128.load(y + o), f32x4.mul(v128.load(x + o), sv)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(y + o) + load<f32>(x + o) * s);
  }
}

// y = s·x
export function scaleF32(y: usize, x: usize, s: f32, n: i32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.mul(v128.load(x + o), sv));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(x + o) * s);
  }
}

// cap·tanh(x/cap) (Gemma-2 attn_logit_softcapping / final_logit_softcapping).
export function softcapF32(y: usize, x: usize, cap: f32, n: i32): void {
  const cv = f32x4.splat(cap), icv = f32x4.splat(1 / cap);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.mul(tanhV(f32x4.mul(v128.load(x + o), icv)), cv));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, cap * <f32>Math.tanh(<f64>(load<f32>(x + o) / cap)));
  }
}

/**
 * In-place softmax of `rows` rows of n. Per row: optional softcap (cap > 0), then ·invTemp, then
 * a max-subtracted exp with the sum accumulated in f64. `sinkMode` 1 adds one extra logit `sink`
 * to the denominator (and the max) of every row, 2 reads it per row from sinks[r / sinkGroup].
 */
export function softmaxF32(x: usize, rows: i32, n: i32, cap: f32, invTemp: f32, sinkMode: i32, sink: f32, sinks: usize, sinkGroup: i32): void {
  const rowBytes = <usize>n << 2;
  for (let r = 0; r < rows; r++) {
    const p = x + <usize>r * rowBytes;
    if (cap > 0) softcapF32(p, p, cap, n);
    if (invTemp != 1) scaleF32(p, p, invTemp, n);
    let m: f32 = -Infinity;
    let mv = f32x4.splat(-Infinity);
    let i = 0;
    for (; i + 4 <= n; i += 4) mv = f32x4.max(mv, v128.load(p + (<usize>i << 2)));
    m = hmax(mv);
    for (; i < n; i++) m = max(m, load<f32>(p + (<usize>i << 2)));
    let sk: f32 = -Infinity;
    if (sinkMode == 1) sk = sink;
    else if (sinkMode == 2) sk = load<f32>(sinks + (<usize>(r / sinkGroup) << 2));
    if (sinkMode != 0) m = max(m, sk);
    const msplat = f32x4.splat(m);
    let acc = f64x2.splat(0);
    i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      const e = expV(f32x4.sub(v128.load(p + o), msplat));
      v128.store(p + o, e);
      acc = f64x2.add(acc, f64x2.add(f64x2.promote_low_f32x4(e), f64x2.promote_low_f32x4(i64x2.shuffle(e, e, 1, 0))));
    }
    let s = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
    for (; i < n; i++) {
      const o = <usize>i << 2;
      const e = Mathf.exp(load<f32>(p + o) - m);
      store<f32>(p + o, e);
      s += e;
    }
    if (sinkMode != 0) s += Math.exp(<f64>(sk - m));
    scaleF32(p, p, <f32>(1 / s), n);
  }
}

/** Index of the largest element; the first one on ties. NaN is never selected. */
export function argmaxF32(x: usize, n: i32): i32 {
  let best = 0;
  let bv: f32 = -Infinity;
  let i = 0;
  // Vector pass finds the maximum; a scalar pass then finds its first index.
  let mv = f32x4.splat(-Infinity);
  for (; i + 4 <= n; i += 4) mv = f32x4.max(mv, v128.load(x + (<usize>i << 2)));
  bv = hmax(mv);
  for (; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    if (v > bv) bv = v;
  }
  if (bv != bv) {
    // A NaN reached the vector max: fall back to a scalar scan that skips NaN.
    bv = -Infinity;
    for (let j = 0; j < n; j++) {
      const v = load<f32>(x + (<usize>j << 2));
      if (v > bv) bv = v;
    }
  }
  for (let j = 0; j < n; j++) {
    if (load<f32>(x + (<usize>j << 2)) == bv) {
      best = j;
      break;
    }
  }
  return best;
}

/** log Σ exp(x), max-subtracted, sum in f64. */
export function logSumExpF32(x: usize, n: i32): f64 {
  let mv = f32x4.splat(-Infinity);
  let i = 0;
  for (; i + 4 <= n; i += 4) mv = f32x4.max(mv, v128.load(x + (<usize>i << 2)));
  let m = hmax(mv);
  for (; i < n; i++) m = max(m, load<f32>(x + (<usize>i << 2)));
  if (m == -Infinity || m == Infinity || m != m) return <f64>m;
  const msplat = f32x4.splat(m);
  let acc = f64x2.splat(0);
  i = 0;
  for (; i + 4 <= n; i += 4) {
    const e = expV(f32x4.sub(v128.load(x + (<usize>i << 2)), msplat));
    acc = f64x2.add(acc, f64x2.add(f64x2.promote_low_f32x4(e), f64x2.promote_low_f32x4(i64x2.shuffle(e, e, 1, 0))));
  }
  let s = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
  for (; i < n; i++) s += Math.exp(<f64>(load<f32>(x + (<usize>i << 2)) - m));
  return <f64>m + Math.log(s);
}
