// Gated DeltaNet pieces (Qwen3-Next linear-attention layers): the gates of the pass's tokens, and one
// decode step of the rule (a pass of several tokens runs delta_chunked.wgsl).
//
// gates: β = sigmoid(b), g = −exp(A_log)·softplus(a + dt_bias) (softplus threshold 20), per head and
//   token t (grid y; ba rows 2H apart, g and β rows H apart).
// delta: per value head h (key head h / (Hv/Hk)): q, k L2-normalised (eps 1e-6), then
//   S ← exp(g) S;  u = β (v − Sᵀk);  S ← S + k uᵀ;  o = scale · Sᵀq       (S [dk, dv] in st)
//   one workgroup per head, one invocation per value column (columns are independent).

import { kernelSource, reductions } from './common.wgsl';

export const GATES_PARAMS = ['H', 'baOff', 'gOff', 'betaOff', 'aLogOff', 'dtOff'];
export const gatesWgsl = kernelSource(GATES_PARAMS, ['p', 'a', 'c'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let h = gid.x;
  let t = gid.y;
  if (h >= p.H) { return; }
  let ba = p.baOff + t * 2u * p.H;
  let x = a[ba + p.H + h] + c[p.dtOff + h];
  var sp = x;
  if (x <= 20.0) { sp = log(1.0 + exp(x)); }
  a[p.gOff + t * p.H + h] = -exp(c[p.aLogOff + h]) * sp;
  a[p.betaOff + t * p.H + h] = 1.0 / (1.0 + exp(-a[ba + h]));
}
`);

export const DELTA_WG = 64;
/** qOff/kOff: key-head-major [Hk, dk]; vOff, oOff: [Hv, dv]; gOff, betaOff: [Hv]; S at st[sOff + h·dk·dv]. */
export const DELTA_PARAMS = ['Hv', 'Hk', 'dk', 'dv', 'qOff', 'kOff', 'vOff', 'oOff', 'gOff', 'betaOff', 'sOff', 'normQK', 'scale:f'];
export const deltaWgsl = kernelSource(DELTA_PARAMS, ['p', 'a', 'st'], reductions(DELTA_WG) + `
var<workgroup> qs: array<f32, 256>;
var<workgroup> ks: array<f32, 256>;
@compute @workgroup_size(${DELTA_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  if (h >= p.Hv) { return; }
  let kh = h / (p.Hv / p.Hk);
  var sq = 0.0;
  var sk = 0.0;
  for (var i = li; i < p.dk; i += ${DELTA_WG}u) {
    let q = a[p.qOff + kh * p.dk + i];
    let k = a[p.kOff + kh * p.dk + i];
    qs[i] = q;
    ks[i] = k;
    sq += q * q;
    sk += k * k;
  }
  let tq = wsum(sq, li);
  let tk = wsum(sk, li);
  var iq = 1.0;
  var ik = 1.0;
  if (p.normQK != 0u) { iq = 1.0 / sqrt(tq + 1e-6); ik = 1.0 / sqrt(tk + 1e-6); }
  let e = exp(a[p.gOff + h]);
  let b = a[p.betaOff + h];
  let sb = p.sOff + h * p.dk * p.dv;
  for (var j = li; j < p.dv; j += ${DELTA_WG}u) {
    var kv = 0.0;
    for (var i = 0u; i < p.dk; i++) {
      let s = st[sb + i * p.dv + j] * e;
      kv += s * (ks[i] * ik);
    }
    let u = (a[p.vOff + h * p.dv + j] - kv) * b;
    var o = 0.0;
    for (var i = 0u; i < p.dk; i++) {
      let idx = sb + i * p.dv + j;
      let s = st[idx] * e + (ks[i] * ik) * u;
      st[idx] = s;
      o += s * (qs[i] * iq);
    }
    a[p.oOff + h * p.dv + j] = o * p.scale;
  }
}
`);
