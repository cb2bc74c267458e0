// Recurrent-layer kernels (LFM2 short conv, MiniMax lightning attention, RWKV-4, RecurrentGemma
// RG-LRU). Each runs T tokens in order, so a decode step is T = 1; token t sits at position
// step.pos + t, and kernels whose recurrence restarts at position 0 check that.
//
// lightning: per head h (one workgroup), S ← exp(−s_h) S + k vᵀ;  o = Sᵀ q   (S [d, d] in st, s_h in c)
//   q, k, v of head h at qOff/kOff/vOff + t·tokStride + h·headStride; o [T, H, d].
// wkv4: RWKV-4 WKV per channel (max-tracking form of HF rwkv_linear_attention_cpu), state [3, C] =
//   (num, den, max) in st; at position 0 the state starts at (0, 0, −1e38).
// shift: token shift of RWKV: out_j[t] = x[t]·μ_j + x[t−1]·(1 − μ_j) for j < nMix (x[−1] = st shift
//   state, μ_j at c[mixOff + j·D]), out_j at outOff + j·outStride + t·D; then the shift state takes x[T−1].
// rglru: RG-LRU per channel ch (head h = ch / bw): gate products with the block-diagonal matrices
//   Mi, Ma ([H, bw, bw], Linear layout [out, in], in c) plus biases, i = sigmoid(·), r = sigmoid(·),
//   log a = r · logABase[ch];  h ← a h + (i · x) · sqrt(1 − a²)  (h ← i · x at position 0);
//   out = h · y.  xb, y, out [T, W]; h [W] in st.
// act: in place over n floats: 0 relu(x)², 1 gelu_tanh(x) (as x·sigmoid(2u), as the WASM kernel).

import { kernelSource } from './common.wgsl';

export const LIGHTNING_WG = 64;
export const LIGHTNING_PARAMS = ['T', 'H', 'd', 'qOff', 'kOff', 'vOff', 'headStride', 'tokStride', 'oOff', 'sOff', 'slopeOff'];
export const lightningWgsl = kernelSource(LIGHTNING_PARAMS, ['p', 'a', 'st', 'c'], `
var<workgroup> qs: array<f32, 256>;
var<workgroup> ks: array<f32, 256>;
@compute @workgroup_size(${LIGHTNING_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  if (h >= p.H) { return; }
  let e = exp(-c[p.slopeOff + h]);
  let sb = p.sOff + h * p.d * p.d;
  for (var t = 0u; t < p.T; t++) {
    let base = t * p.tokStride + h * p.headStride;
    workgroupBarrier();
    for (var i = li; i < p.d; i += ${LIGHTNING_WG}u) {
      qs[i] = a[p.qOff + base + i];
      ks[i] = a[p.kOff + base + i];
    }
    workgroupBarrier();
    for (var j = li; j < p.d; j += ${LIGHTNING_WG}u) {
      let v = a[p.vOff + base + j];
      var o = 0.0;
      for (var i = 0u; i < p.d; i++) {
        let idx = sb + i * p.d + j;
        let s = st[idx] * e + ks[i] * v;
        st[idx] = s;
        o += s * qs[i];
      }
      a[p.oOff + (t * p.H + h) * p.d + j] = o;
    }
  }
}
`);

export const WKV_PARAMS = ['T', 'C', 'kOff', 'vOff', 'oOff', 'sOff', 'decayOff', 'firstOff'];
export const wkvWgsl = kernelSource(WKV_PARAMS, ['p', 'a', 'st', 'c', 'step'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.C) { return; }
  let w = -exp(c[p.decayOff + ch]);
  let u = c[p.firstOff + ch];
  var aa = st[p.sOff + ch];
  var bb = st[p.sOff + p.C + ch];
  var pp = st[p.sOff + 2u * p.C + ch];
  if (step.pos == 0u) { aa = 0.0; bb = 0.0; pp = -1e38; }
  for (var t = 0u; t < p.T; t++) {
    let k = a[p.kOff + t * p.C + ch];
    let v = a[p.vOff + t * p.C + ch];
    let ww = u + k;
    var q = max(pp, ww);
    var e1 = exp(pp - q);
    var e2 = exp(ww - q);
    a[p.oOff + t * p.C + ch] = (e1 * aa + e2 * v) / (e1 * bb + e2);
    let ww2 = pp + w;
    q = max(ww2, k);
    e1 = exp(ww2 - q);
    e2 = exp(k - q);
    aa = e1 * aa + e2 * v;
    bb = e1 * bb + e2;
    pp = q;
  }
  st[p.sOff + ch] = aa;
  st[p.sOff + p.C + ch] = bb;
  st[p.sOff + 2u * p.C + ch] = pp;
}
`);

export const SHIFT_PARAMS = ['T', 'D', 'nMix', 'xOff', 'shiftOff', 'mixOff', 'outOff', 'outStride'];
export const shiftWgsl = kernelSource(SHIFT_PARAMS, ['p', 'a', 'st', 'c'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  if (d >= p.D) { return; }
  var prev = st[p.shiftOff + d];
  for (var t = 0u; t < p.T; t++) {
    let x = a[p.xOff + t * p.D + d];
    for (var j = 0u; j < p.nMix; j++) {
      let m = c[p.mixOff + j * p.D + d];
      a[p.outOff + j * p.outStride + t * p.D + d] = x * m + prev * (1.0 - m);
    }
    prev = x;
  }
  st[p.shiftOff + d] = prev;
}
`);

export const RGLRU_PARAMS = ['T', 'W', 'bw', 'xOff', 'yOff', 'oOff', 'hOff', 'miOff', 'maOff', 'biOff', 'baOff', 'logAOff'];
export const rglruWgsl = kernelSource(RGLRU_PARAMS, ['p', 'a', 'st', 'c', 'step'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.W) { return; }
  let head = ch / p.bw;
  let j = ch % p.bw;
  let row = head * p.bw * p.bw + j * p.bw;
  var h = st[p.hOff + ch];
  for (var t = 0u; t < p.T; t++) {
    let xb = p.xOff + t * p.W + head * p.bw;
    var gi = 0.0;
    var ga = 0.0;
    for (var m = 0u; m < p.bw; m++) {
      let x = a[xb + m];
      gi += x * c[p.miOff + row + m];
      ga += x * c[p.maOff + row + m];
    }
    gi = 1.0 / (1.0 + exp(-(gi + c[p.biOff + ch])));
    ga = 1.0 / (1.0 + exp(-(ga + c[p.baOff + ch])));
    let logA = ga * c[p.logAOff + ch];
    let xg = gi * a[p.xOff + t * p.W + ch];
    if (step.pos + t == 0u) {
      h = xg;
    } else {
      h = exp(logA) * h + xg * sqrt(1.0 - exp(2.0 * logA));
    }
    a[p.oOff + t * p.W + ch] = h * a[p.yOff + t * p.W + ch];
  }
  st[p.hOff + ch] = h;
}
`);

export const RACT = { relu2: 0, geluTanh: 1 } as const;
// Padded to eight words: a 16-byte parameter block after larger ones trips a late-binding size check on some wgpu builds.
export const RACT_PARAMS = ['n', 'op', 'off', 'nx', 'pad0', 'pad1', 'pad2', 'pad3'];
export const ractWgsl = kernelSource(RACT_PARAMS, ['p', 'a'], `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.nx * 256u;
  if (i >= p.n) { return; }
  let x = a[p.off + i];
  var y = x;
  if (p.op == 0u) {
    let r = max(x, 0.0);
    y = r * r;
  } else {
    let u = 1.5957691216057308 * (x + 0.044715 * x * x * x);
    y = x / (1.0 + exp(-u));
  }
  a[p.off + i] = y;
}
`);
