// Selective state-space pieces (Mamba-1 / Mamba-2 mixers), T tokens in turn, state in `st`.
//
// (The causal conv of the mixers is kernels/conv.wgsl.ts.)
// s6 (Mamba-1): per channel d (one invocation), with Δ = softplus(dt + dt_bias) (dtMode 1) or dt:
//   h[d, n] = exp(A[d, n]·Δ)·h[d, n] + (Δ·B[n])·x;  y = (Σ_n h·C[n] + D[d]·x) · SiLU(z)  (z optional)
// ssd (Mamba-2): per (head, channel p) (one invocation), head h reading group h / (H/G) of B and C,
//   Δ_h = clamp(softplus(dt_h + dt_bias_h), lo, hi) (dtMode 1) or dt_h;  dA = exp(Δ_h·A_h)
//   h[h, p, n] = h·dA + (Δ_h·B[n])·x;  y = (Σ_n h·C[n] + D_h·x) · SiLU(z)  (D, z optional)
// softplus is torch's (threshold 20) with an accurate log1p, as the WASM kernel's f64 log1p.

import { kernelSource } from './common.wgsl';

const SOFTPLUS = `
fn log1p_(e: f32) -> f32 {
  let u = 1.0 + e;
  if (u == 1.0) { return e; }
  return log(u) * (e / (u - 1.0));
}
fn softplus(v: f32) -> f32 {
  if (v > 20.0) { return v; }
  return log1p_(exp(v));
}
fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }
`;

/**
 * Mamba-1 scan. x, dt, z, y: [T, dI] in `a` (dt raw when dtMode 1, with dt_bias at c[dtbOff] when
 * hasDtB); B, C: [T, N] in `a`, rows bcStride apart; A [dI, N], D [dI] in `c`; h [dI, N] in `st`.
 */
export const S6_PARAMS = ['T', 'dI', 'N', 'xOff', 'dtOff', 'dtMode', 'dtbOff', 'hasDtB', 'aOff', 'bOff', 'cOff', 'bcStride', 'dOff', 'zOff', 'hasZ', 'yOff', 'hOff'];
export const s6Wgsl = kernelSource(S6_PARAMS, ['p', 'a', 'st', 'c'], SOFTPLUS + `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  if (d >= p.dI) { return; }
  let hb = p.hOff + d * p.N;
  let ab = p.aOff + d * p.N;
  let Dd = c[p.dOff + d];
  var db = 0.0;
  if (p.hasDtB != 0u) { db = c[p.dtbOff + d]; }
  for (var t = 0u; t < p.T; t++) {
    let i = t * p.dI + d;
    var dt = a[p.dtOff + i];
    if (p.dtMode != 0u) { dt = softplus(dt + db); }
    let xv = a[p.xOff + i];
    let bb = p.bOff + t * p.bcStride;
    let cb = p.cOff + t * p.bcStride;
    var s = 0.0;
    for (var n = 0u; n < p.N; n++) {
      let hn = exp(c[ab + n] * dt) * st[hb + n] + dt * a[bb + n] * xv;
      st[hb + n] = hn;
      s += hn * a[cb + n];
    }
    var o = s + xv * Dd;
    if (p.hasZ != 0u) { o = o * silu(a[p.zOff + i]); }
    a[p.yOff + i] = o;
  }
}
`);

/**
 * Mamba-2 scan. x [T, H·P] rows xStride apart; B, C [T, G·N] rows bcStride apart; dt [T, H] rows
 * dtStride apart (raw when dtMode 1; dt_bias [H] at c[dtbOff]); z, y [T, H·P] rows H·P apart;
 * A, D [H] in `c`; h [H, P, N] in `st`.
 */
export const SSD_PARAMS = ['T', 'H', 'P', 'G', 'N', 'xOff', 'xStride', 'bOff', 'cOff', 'bcStride', 'dtOff', 'dtStride', 'dtMode', 'dtbOff',
  'aOff', 'dOff', 'hasD', 'zOff', 'hasZ', 'yOff', 'hOff', 'lo:f', 'hi:f'];
export const ssdWgsl = kernelSource(SSD_PARAMS, ['p', 'a', 'st', 'c'], SOFTPLUS + `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  let HP = p.H * p.P;
  if (j >= HP) { return; }
  let hh = j / p.P;
  let g = hh / (p.H / p.G);
  let hb = p.hOff + j * p.N;
  let Ah = c[p.aOff + hh];
  var Dh = 0.0;
  if (p.hasD != 0u) { Dh = c[p.dOff + hh]; }
  for (var t = 0u; t < p.T; t++) {
    var dt = a[p.dtOff + t * p.dtStride + hh];
    if (p.dtMode != 0u) { dt = min(max(softplus(dt + c[p.dtbOff + hh]), p.lo), p.hi); }
    let dA = exp(dt * Ah);
    let xv = a[p.xOff + t * p.xStride + j];
    let bb = p.bOff + t * p.bcStride + g * p.N;
    let cb = p.cOff + t * p.bcStride + g * p.N;
    var s = 0.0;
    for (var n = 0u; n < p.N; n++) {
      let hn = st[hb + n] * dA + dt * a[bb + n] * xv;
      st[hb + n] = hn;
      s += hn * a[cb + n];
    }
    var o = s + Dh * xv;
    if (p.hasZ != 0u) { o = o * silu(a[p.zOff + t * HP + j]); }
    a[p.yOff + t * HP + j] = o;
  }
}
`);
