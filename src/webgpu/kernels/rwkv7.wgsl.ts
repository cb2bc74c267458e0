// RWKV-7 time-mix kernels (the WASM kernels of assembly/rwkv7.ts; docs/recurrences.md §17).
//
// keys: per row and head (one invocation each): κ = k ⊙ k_k, κ̂ = κ / sqrt(Σκ² + eps) (clampNorm 0)
//   or κ / max(‖κ‖, eps) (1), then k ← k + (k ⊙ (a − 1)) ⊙ k_a. k, a, κ̂ [rows, H·dk]; k_k, k_a in c.
// wkv: per head h (grid x) and block of 64 value columns (grid y), over T tokens in order, S [dk, dv]
//   at st[sOff + h·dk·dv]:  u = Sᵀκ̂;  S ← Diag(exp w) S − (κ̂ ⊙ a) uᵀ + k vᵀ;  y = Sᵀ r.
//   Columns are independent; a token's dk-vectors go to workgroup memory (dk ≤ 256).
// output: per row and head (one invocation each): y ← (GroupNorm(y)·gw + gb + (Σ r k r_k)·v) ⊙ g,
//   the norm over the head's dv values with eps. y, v, g [rows, H·dv]; r, k [rows, H·dk]; r_k, gw, gb in c.

import { kernelSource } from './common.wgsl';

export const RWKV7_WG = 64;
export const RWKV7_MAX_DK = 256;

export const KEYS_PARAMS = ['n', 'H', 'dk', 'kOff', 'aOff', 'kappaOff', 'kKOff', 'kAOff', 'clampNorm', 'eps:f'];
export const keysWgsl = kernelSource(KEYS_PARAMS, ['p', 'a', 'c'], `
@compute @workgroup_size(${RWKV7_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x;
  if (idx >= p.n) { return; }
  let base = idx * p.dk;
  let wb = (idx % p.H) * p.dk;
  var n2 = 0.0;
  for (var i = 0u; i < p.dk; i++) {
    let x = a[p.kOff + base + i] * c[p.kKOff + wb + i];
    a[p.kappaOff + base + i] = x;
    n2 += x * x;
  }
  var inv = 1.0 / sqrt(n2 + p.eps);
  if (p.clampNorm != 0u) { inv = 1.0 / max(sqrt(n2), p.eps); }
  for (var i = 0u; i < p.dk; i++) {
    a[p.kappaOff + base + i] *= inv;
    let k = a[p.kOff + base + i];
    a[p.kOff + base + i] = k + k * (a[p.aOff + base + i] - 1.0) * c[p.kAOff + wb + i];
  }
}
`);

export const WKV7_PARAMS = ['T', 'H', 'dk', 'dv', 'rOff', 'wOff', 'kOff', 'vOff', 'kappaOff', 'aOff', 'yOff', 'sOff'];
export const wkv7Wgsl = kernelSource(WKV7_PARAMS, ['p', 'a', 'st'], `
var<workgroup> rs: array<f32, ${RWKV7_MAX_DK}>;
var<workgroup> es: array<f32, ${RWKV7_MAX_DK}>;
var<workgroup> ks: array<f32, ${RWKV7_MAX_DK}>;
var<workgroup> kap: array<f32, ${RWKV7_MAX_DK}>;
var<workgroup> nb: array<f32, ${RWKV7_MAX_DK}>;
@compute @workgroup_size(${RWKV7_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  let j = wg.y * ${RWKV7_WG}u + li;
  let sb = p.sOff + h * p.dk * p.dv;
  for (var t = 0u; t < p.T; t++) {
    let kb = (t * p.H + h) * p.dk;
    workgroupBarrier();
    for (var i = li; i < p.dk; i += ${RWKV7_WG}u) {
      rs[i] = a[p.rOff + kb + i];
      es[i] = exp(a[p.wOff + kb + i]);
      ks[i] = a[p.kOff + kb + i];
      let q = a[p.kappaOff + kb + i];
      kap[i] = q;
      nb[i] = -(q * a[p.aOff + kb + i]);
    }
    workgroupBarrier();
    if (j < p.dv) {
      var u = 0.0;
      for (var i = 0u; i < p.dk; i++) { u += kap[i] * st[sb + i * p.dv + j]; }
      let v = a[p.vOff + (t * p.H + h) * p.dv + j];
      var o = 0.0;
      for (var i = 0u; i < p.dk; i++) {
        let idx = sb + i * p.dv + j;
        let s = st[idx] * es[i] + nb[i] * u + ks[i] * v;
        st[idx] = s;
        o += rs[i] * s;
      }
      a[p.yOff + (t * p.H + h) * p.dv + j] = o;
    }
  }
}
`);

export const OUTPUT_PARAMS = ['n', 'H', 'dk', 'dv', 'yOff', 'rOff', 'kOff', 'vOff', 'gOff', 'rKOff', 'gwOff', 'gbOff', 'eps:f'];
export const outputWgsl = kernelSource(OUTPUT_PARAMS, ['p', 'a', 'c'], `
@compute @workgroup_size(${RWKV7_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x;
  if (idx >= p.n) { return; }
  let h = idx % p.H;
  let kb = idx * p.dk;
  let vb = idx * p.dv;
  var bonus = 0.0;
  for (var i = 0u; i < p.dk; i++) { bonus += a[p.rOff + kb + i] * a[p.kOff + kb + i] * c[p.rKOff + h * p.dk + i]; }
  var s = 0.0;
  for (var j = 0u; j < p.dv; j++) { s += a[p.yOff + vb + j]; }
  let mean = s / f32(p.dv);
  var q = 0.0;
  for (var j = 0u; j < p.dv; j++) {
    let d = a[p.yOff + vb + j] - mean;
    q += d * d;
  }
  let inv = 1.0 / sqrt(q / f32(p.dv) + p.eps);
  for (var j = 0u; j < p.dv; j++) {
    let cw = h * p.dv + j;
    let n = (a[p.yOff + vb + j] - mean) * inv * c[p.gwOff + cw] + c[p.gbOff + cw];
    a[p.yOff + vb + j] = (n + bonus * a[p.vOff + vb + j]) * a[p.gOff + vb + j];
  }
}
`);
