// xLSTM mLSTM kernels (the WASM kernels of src/kernels/mlstm.ts).
//
// rule: one workgroup per head h, over T tokens in order; state at st[sOff]: C [H, dk, dv], then
//   n [H, dk], then m [H]. Per token (q̃ = q·dk^−½):
//     m' = max(log σ(f) + m, i);  a = e^{log σ(f) + m − m'};  b = e^{i − m'}
//     C ← a C + b k vᵀ;  n ← a n + b k;  y = q̃ᵀC / (max(|q̃·n|, e^{−m'}) + eps)
//   The head's scalars are computed by every invocation alike; key channels of n and value columns
//   of C are split over the invocations; q̃·n is a workgroup sum. The token's q̃ and k go to
//   workgroup memory (dk ≤ 256).
//   q, k [T, H, dk], v, y [T, H, dv], i, f [T, H] in a.
// output: per row and head (one invocation each): y ← σ(o) ⊙ (LayerNorm(y)·w + b) over the head's dv
//   values (biased variance, eps); w, b [H·dv] in c (hasB 0: no bias).

import { kernelSource, reductions } from './common.wgsl';

export const MLSTM_WG = 64;
export const MLSTM_MAX_DK = 256;

export const MLSTM_PARAMS = ['T', 'H', 'dk', 'dv', 'qOff', 'kOff', 'vOff', 'iOff', 'fOff', 'yOff', 'sOff', 'eps:f'];
export const mlstmWgsl = kernelSource(MLSTM_PARAMS, ['p', 'a', 'st'], reductions(MLSTM_WG) + `
var<workgroup> qs: array<f32, ${MLSTM_MAX_DK}>;
var<workgroup> ks: array<f32, ${MLSTM_MAX_DK}>;
@compute @workgroup_size(${MLSTM_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  let cb = p.sOff + h * p.dk * p.dv;
  let nb = p.sOff + p.H * p.dk * p.dv + h * p.dk;
  let mi = p.sOff + p.H * (p.dk * p.dv + p.dk) + h;
  let scale = 1.0 / sqrt(f32(p.dk));
  var m = st[mi];
  for (var t = 0u; t < p.T; t++) {
    workgroupBarrier();
    let kb = (t * p.H + h) * p.dk;
    for (var i = li; i < p.dk; i += ${MLSTM_WG}u) {
      qs[i] = a[p.qOff + kb + i] * scale;
      ks[i] = a[p.kOff + kb + i];
    }
    let fp = a[p.fOff + t * p.H + h];
    let ip = a[p.iOff + t * p.H + h];
    let logF = min(fp, 0.0) - log(1.0 + exp(-abs(fp)));
    let mNew = max(logF + m, ip);
    let fa = exp(logF + m - mNew);
    let ia = exp(ip - mNew);
    m = mNew;
    var qn = 0.0;
    for (var i = li; i < p.dk; i += ${MLSTM_WG}u) {
      let n = fa * st[nb + i] + ia * a[p.kOff + kb + i];
      st[nb + i] = n;
      qn += a[p.qOff + kb + i] * scale * n;
    }
    let den = max(abs(wsum(qn, li)), exp(-mNew)) + p.eps;
    let vb = (t * p.H + h) * p.dv;
    for (var j = li; j < p.dv; j += ${MLSTM_WG}u) {
      let vj = ia * a[p.vOff + vb + j];
      var num = 0.0;
      for (var i = 0u; i < p.dk; i++) {
        let idx = cb + i * p.dv + j;
        let c = fa * st[idx] + ks[i] * vj;
        st[idx] = c;
        num += qs[i] * c;
      }
      a[p.yOff + vb + j] = num / den;
    }
  }
  workgroupBarrier();
  if (li == 0u) { st[mi] = m; }
}
`);

export const MLSTM_OUTPUT_PARAMS = ['n', 'H', 'dv', 'yOff', 'oOff', 'wOff', 'bOff', 'hasB', 'eps:f'];
export const mlstmOutputWgsl = kernelSource(MLSTM_OUTPUT_PARAMS, ['p', 'a', 'c'], `
@compute @workgroup_size(${MLSTM_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x;
  if (idx >= p.n) { return; }
  let base = idx * p.dv;
  let wb = (idx % p.H) * p.dv;
  var mean = 0.0;
  for (var j = 0u; j < p.dv; j++) { mean += a[p.yOff + base + j]; }
  mean /= f32(p.dv);
  var vr = 0.0;
  for (var j = 0u; j < p.dv; j++) {
    let d = a[p.yOff + base + j] - mean;
    vr += d * d;
  }
  let inv = 1.0 / sqrt(vr / f32(p.dv) + p.eps);
  for (var j = 0u; j < p.dv; j++) {
    var x = (a[p.yOff + base + j] - mean) * inv * c[p.wOff + wb + j];
    if (p.hasB != 0u) { x += c[p.bOff + wb + j]; }
    a[p.yOff + base + j] = x / (1.0 + exp(-a[p.oOff + base + j]));
  }
}
`);
