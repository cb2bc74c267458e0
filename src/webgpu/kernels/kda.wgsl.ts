// Kimi Delta Attention (the gated delta rule with one log-decay per key channel; WASM: the
// linearAttention kernel with decay 'vector' and β).
//
// gates: in place on f [rows, H·dk]: g = −exp(A_log[h])·softplus(f + dt_bias) (softplus threshold 20);
//   A_log [H] and dt_bias [H·dk] in c.
// rule: per value head h (grid x; key head h / (Hv/Hk)) and block of 64 value columns (grid y), over T
//   tokens in order, S [dk, dv] at st[sOff + h·dk·dv]: q, k L2-normalised (eps 1e-6), then
//     S ← Diag(exp g_t) S;  u = β (v − Sᵀk);  S ← S + k uᵀ;  o = scale · Sᵀq
//   Columns are independent; a token's q, k and decays go to workgroup memory (dk ≤ 256), so a pass
//   of T tokens runs the same operations as T single-token passes.
//   Layout: q, k of token t, key head kh at qOff/kOff + t·qkStride + kh·dk; v at vOff + t·vStride + h·dv;
//   g at gOff + (t·Hv + h)·dk; β at betaOff + t·Hv + h; o [T, Hv, dv] at oOff.

import { kernelSource, reductions } from './common.wgsl';

export const KDA_WG = 64;
export const KDA_MAX_DK = 256;

export const KDA_GATES_PARAMS = ['n', 'C', 'dk', 'gOff', 'aLogOff', 'dtOff', 'nx'];
export const kdaGatesWgsl = kernelSource(KDA_GATES_PARAMS, ['p', 'a', 'c'], `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.y * p.nx * 256u + gid.x;
  if (idx >= p.n) { return; }
  let ch = idx % p.C;
  let x = a[p.gOff + idx] + c[p.dtOff + ch];
  var sp = x;
  if (x <= 20.0) { sp = log(1.0 + exp(x)); }
  a[p.gOff + idx] = -exp(c[p.aLogOff + ch / p.dk]) * sp;
}
`);

export const KDA_PARAMS = ['T', 'Hv', 'Hk', 'dk', 'dv', 'qOff', 'kOff', 'vOff', 'qkStride', 'vStride', 'oOff', 'gOff', 'betaOff', 'sOff', 'scale:f'];
export const kdaWgsl = kernelSource(KDA_PARAMS, ['p', 'a', 'st'], reductions(KDA_WG) + `
var<workgroup> qs: array<f32, ${KDA_MAX_DK}>;
var<workgroup> ks: array<f32, ${KDA_MAX_DK}>;
var<workgroup> es: array<f32, ${KDA_MAX_DK}>;
@compute @workgroup_size(${KDA_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  let kh = h / (p.Hv / p.Hk);
  let j = wg.y * ${KDA_WG}u + li;
  let sb = p.sOff + h * p.dk * p.dv;
  for (var t = 0u; t < p.T; t++) {
    workgroupBarrier();
    var sq = 0.0;
    var sk = 0.0;
    for (var i = li; i < p.dk; i += ${KDA_WG}u) {
      let q = a[p.qOff + t * p.qkStride + kh * p.dk + i];
      let k = a[p.kOff + t * p.qkStride + kh * p.dk + i];
      qs[i] = q;
      ks[i] = k;
      es[i] = exp(a[p.gOff + (t * p.Hv + h) * p.dk + i]);
      sq += q * q;
      sk += k * k;
    }
    let iq = 1.0 / sqrt(wsum(sq, li) + 1e-6);
    let ik = 1.0 / sqrt(wsum(sk, li) + 1e-6);
    if (j < p.dv) {
      let b = a[p.betaOff + t * p.Hv + h];
      var kv = 0.0;
      for (var i = 0u; i < p.dk; i++) { kv += st[sb + i * p.dv + j] * es[i] * (ks[i] * ik); }
      let u = (a[p.vOff + t * p.vStride + h * p.dv + j] - kv) * b;
      var o = 0.0;
      for (var i = 0u; i < p.dk; i++) {
        let idx = sb + i * p.dv + j;
        let s = st[idx] * es[i] + (ks[i] * ik) * u;
        st[idx] = s;
        o += s * (qs[i] * iq);
      }
      a[p.oOff + (t * p.Hv + h) * p.dv + j] = o * p.scale;
    }
  }
}
`);
