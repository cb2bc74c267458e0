// Feed-forward activations over n floats of `a`, with optional biases from `c` added first.
//
// y[i] = f(g[i] + gb, u[i] + ub) where f is by `op`:
//   0 bias only: g + gb           1 SwiGLU: silu(g)·u            2 GeGLU (tanh): gelu_tanh(g)·u
//   3 GeGLU (erf): gelu(g)·u      4 relu²(g)·u                   5 clamped SwiGLU (gpt-oss):
//     gate = min(g, limit), up = clamp(u, −limit, limit), (up + 1)·gate·σ(α·gate)
// Element i belongs to slot j = i / len; a bias reads c[bOff + e·len + i % len] with e = ids[idsOff + j]
// when useIds (per-expert biases stacked [E, len]), else e = 0. biasMask: bit 0 gate bias, bit 1 up bias.
//
// gelu_tanh is evaluated as x·σ(2u) like the WASM kernel (no cancellation of 1 + tanh u). The erf GELU
// computes 1 + erf(z), z = x/√2, as 1 + z·P(z²) for |z| < 0.5 and through erfc elsewhere
// (erfc(|z|) = e^(−z²)·R(|z|) with the same piecewise fits of R as assembly/act.ts below 6, the Laplace
// continued fraction above), e^(−z²) from an exact part of x²/2 and a small rest, with an exp accurate to an
// ulp, so the tail keeps its relative accuracy (a few 1e-7 in f32).

import { kernelSource } from './common.wgsl';

export const ACT_OP = { bias: 0, swiglu: 1, gegluTanh: 2, gegluErf: 3, relu2glu: 4, clampedSwiglu: 5 } as const;

// R(z) = erfc(z)·e^(z²) on [0.5, 6): 11 pieces of width 0.5, degree-8 polynomials in t = (z − centre)·4.
const ERFC_R = [
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
];

// 2/√π · (−1)^n / (n!·(2n+1)): erf(z) = z · Σ_n T[n]·z^(2n) for |z| < 0.5.
const ERF_T = [1.1283791670955126, -0.37612638903183754, 0.11283791670955128, -0.026866170645131252, 0.005223977625442188, -0.0008548327023450853, 0.00012055332981789665, -1.4925650358406252e-05, 1.6462114365889248e-06, -1.6365844691234924e-07];

const lit = (v: number) => v.toExponential(10);

/** WGSL functions: gelu_erf(x) = 0.5·x·(1 + erf(x/√2)), gelu_tanh(x), silu(x), sigm(x). */
export const ACT_FUNCS = `
var<private> ERFC_R: array<f32, ${ERFC_R.length}> = array<f32, ${ERFC_R.length}>(${ERFC_R.map(lit).join(', ')});
var<private> ERF_T: array<f32, ${ERF_T.length}> = array<f32, ${ERF_T.length}>(${ERF_T.map(lit).join(', ')});

fn sigm(x: f32) -> f32 { return 1.0 / (1.0 + exp(min(-x, 80.0))); }
fn silu(x: f32) -> f32 { return x / (1.0 + exp(min(-x, 80.0))); }
fn gelu_tanh(x: f32) -> f32 {
  let u = 1.5957691216057308 * (x + 0.044715 * x * x * x);
  return x / (1.0 + exp(min(-u, 80.0)));
}
// e^h for h ≤ 0 to ~1 ulp (WGSL's exp may be off by 3 + 2|h| ulp): h = n·ln2 + r with ln2 in two
// parts, e^r (|r| ≤ ln2/2) by its Taylor polynomial through r^9, scaled by 2^n.
fn exp_acc(h: f32) -> f32 {
  let n = round(h * 1.4426950408889634);
  let r = fma(-n, 1.428606765330187e-6, fma(-n, 0.693145751953125, h));
  var q = 2.48015873015873e-5;
  q = fma(q, r, 1.984126984126984e-4);
  q = fma(q, r, 1.388888888888889e-3);
  q = fma(q, r, 8.333333333333333e-3);
  q = fma(q, r, 4.166666666666667e-2);
  q = fma(q, r, 0.16666666666666666);
  q = fma(q, r, 0.5);
  q = fma(q, r, 1.0);
  q = fma(q, r, 1.0);
  // 2^n as two exact powers (h ≥ −170): the platform's ldexp / exp2 may be approximate.
  let n1 = i32(n) / 2;
  let n2 = i32(n) - n1;
  return q * bitcast<f32>(u32(n1 + 127) << 23u) * bitcast<f32>(u32(n2 + 127) << 23u);
}
// erfc(a) for a ≥ 0.5 given e = e^(−a²).
fn erfc_pos(a: f32, e: f32) -> f32 {
  if (a >= 6.0) {
    var f = a;
    for (var k = 10; k >= 1; k--) { f = a + (f32(k) * 0.5) / f; }
    return e / (1.7724538509055160 * f);
  }
  let i = u32((a - 0.5) * 2.0);
  let t = (a - (0.75 + 0.5 * f32(i))) * 4.0;
  let b = i * 9u;
  var p = ERFC_R[b + 8u];
  for (var n = 7; n >= 0; n--) { p = p * t + ERFC_R[b + u32(n)]; }
  return e * p;
}
fn gelu_erf(x: f32) -> f32 {
  let z = x * 0.70710678118654752;
  let az = abs(z);
  var c: f32;
  if (az < 0.5) {
    let z2 = z * z;
    var p = ERF_T[9];
    for (var n = 8; n >= 0; n--) { p = p * z2 + ERF_T[u32(n)]; }
    c = 1.0 + z * p;
  } else if (az > 10.0) {
    c = select(0.0, 2.0, z > 0.0);
  } else {
    // e^(−x²/2) with x = xh + xl, xh holding the top 12 significand bits, so xh² is exact and the
    // rest, (2xh + xl)·xl, is small: e^(−z²) keeps its relative accuracy.
    let xh = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
    let xl = x - xh;
    let e = exp_acc(-0.5 * xh * xh) * exp_acc(-0.5 * (2.0 * xh + xl) * xl);
    let r = erfc_pos(az, e);
    c = select(r, 2.0 - r, z > 0.0);
  }
  return 0.5 * x * c;
}
`;

export const ACT_PARAMS = ['n', 'op', 'yOff', 'gOff', 'uOff', 'nx', 'len', 'gbOff', 'ubOff', 'biasMask', 'useIds', 'idsOff', 'alpha:f', 'limit:f'];
export const actWgsl = kernelSource(ACT_PARAMS, ['p', 'a', 'c', 'ids'], ACT_FUNCS + `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.nx * 256u;
  if (i >= p.n) { return; }
  let j = i / p.len;
  var e = 0u;
  if (p.useIds != 0u) { e = ids[p.idsOff + j]; }
  let bi = e * p.len + i % p.len;
  var g = a[p.gOff + i];
  if ((p.biasMask & 1u) != 0u) { g += c[p.gbOff + bi]; }
  if (p.op == 0u) { a[p.yOff + i] = g; return; }
  var u = a[p.uOff + i];
  if ((p.biasMask & 2u) != 0u) { u += c[p.ubOff + bi]; }
  var y = 0.0;
  switch p.op {
    case 1u: { y = silu(g) * u; }
    case 2u: { y = gelu_tanh(g) * u; }
    case 3u: { y = gelu_erf(g) * u; }
    case 4u: { let r = max(g, 0.0); y = r * r * u; }
    case 5u: {
      let gt = min(g, p.limit);
      let up = clamp(u, -p.limit, p.limit);
      y = (up + 1.0) * (gt / (1.0 + exp(min(-p.alpha * gt, 80.0))));
    }
    default: {}
  }
  a[p.yOff + i] = y;
}
`);
