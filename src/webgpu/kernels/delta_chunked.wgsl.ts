// Chunked gated delta rule: T tokens of one value head per workgroup, in chunks of CH tokens, with
// the same result as T applications of the step kernel (linear_attention.wgsl `delta`):
//   S ← exp(g_t) S;  u_t = β_t (v_t − Sᵀk_t);  S ← S + k_t u_tᵀ;  o_t = scale · Sᵀq_t
// (q, k L2-normalised with eps 1e-6 when normQK). Within a chunk, with S₀ the incoming state and
// G_t = g_1 + … + g_t the cumulative log-decay,
//   S_t = e^{G_t} S₀ + Σ_{j≤t} e^{G_t−G_j} k_j u_jᵀ, so
//   u_t = β_t (v_t − e^{G_t} S₀ᵀk_t) − Σ_{j<t} β_t e^{G_t−G_j} (k_t·k_j) u_j      (forward substitution)
//   o_t = scale · (e^{G_t} S₀ᵀq_t + Σ_{j≤t} e^{G_t−G_j} (q_t·k_j) u_j)
//   S ← e^{G_C} S₀ + Σ_t e^{G_C−G_t} k_t u_tᵀ
// Every exponent is ≤ 0. The value columns of S are independent: one invocation per column keeps
// its u_t in registers; the chunk's Gram matrices k·kᵀ and q·kᵀ, G and β sit in workgroup memory.
//
// Layout: q, k of token t, key head kh at qOff/kOff + t·qkStride + kh·dk; v at vOff + t·vStride + h·dv;
// g, β at gOff/betaOff + t·Hv + h; o [T, Hv, dv] at oOff; S [Hv, dk, dv] at st[sOff].

import { kernelSource } from './common.wgsl';

export const DELTA_CHUNK_WG = 64;
export const DELTA_CHUNK_PARAMS = ['T', 'Hv', 'Hk', 'dk', 'dv', 'qOff', 'kOff', 'vOff', 'qkStride', 'vStride', 'oOff', 'gOff', 'betaOff', 'sOff', 'normQK', 'scale:f'];

export function deltaChunkedWgsl(CH: number): string {
  const WG = DELTA_CHUNK_WG;
  return kernelSource(DELTA_CHUNK_PARAMS, ['p', 'a', 'st'], `
var<workgroup> kk: array<f32, ${CH * CH}>;
var<workgroup> qk: array<f32, ${CH * CH}>;
var<workgroup> gc: array<f32, ${CH}>;
var<workgroup> bc: array<f32, ${CH}>;
var<workgroup> iq: array<f32, ${CH}>;
var<workgroup> ik: array<f32, ${CH}>;

fn qAt(t: u32, kh: u32, i: u32) -> f32 { return a[p.qOff + t * p.qkStride + kh * p.dk + i]; }
fn kAt(t: u32, kh: u32, i: u32) -> f32 { return a[p.kOff + t * p.qkStride + kh * p.dk + i]; }

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  if (h >= p.Hv) { return; }
  let kh = h / (p.Hv / p.Hk);
  let sb = p.sOff + h * p.dk * p.dv;
  var u: array<f32, ${CH}>;
  var sk: array<f32, ${CH}>;
  var sq: array<f32, ${CH}>;
  for (var t0 = 0u; t0 < p.T; t0 += ${CH}u) {
    let n = min(${CH}u, p.T - t0);
    workgroupBarrier();
    // Per-token inverse norms, gates.
    if (li < n) {
      let t = t0 + li;
      var nq = 1.0;
      var nk = 1.0;
      if (p.normQK != 0u) {
        var s1 = 0.0;
        var s2 = 0.0;
        for (var i = 0u; i < p.dk; i++) {
          let q = qAt(t, kh, i);
          let k = kAt(t, kh, i);
          s1 += q * q;
          s2 += k * k;
        }
        nq = 1.0 / sqrt(s1 + 1e-6);
        nk = 1.0 / sqrt(s2 + 1e-6);
      }
      iq[li] = nq;
      ik[li] = nk;
      bc[li] = a[p.betaOff + t * p.Hv + h];
    }
    if (li == 0u) {
      var acc = 0.0;
      for (var t = 0u; t < n; t++) {
        acc += a[p.gOff + (t0 + t) * p.Hv + h];
        gc[t] = acc;
      }
    }
    workgroupBarrier();
    // Gram matrices of the normalised keys and queries (lower triangle incl. the diagonal).
    for (var e = li; e < n * n; e += ${WG}u) {
      let t = e / n;
      let j = e % n;
      if (j <= t) {
        var dkk = 0.0;
        var dqk = 0.0;
        for (var i = 0u; i < p.dk; i++) {
          let kj = kAt(t0 + j, kh, i);
          dkk += kAt(t0 + t, kh, i) * kj;
          dqk += qAt(t0 + t, kh, i) * kj;
        }
        kk[t * ${CH}u + j] = dkk * ik[t] * ik[j];
        qk[t * ${CH}u + j] = dqk * iq[t] * ik[j];
      }
    }
    workgroupBarrier();
    for (var col = li; col < p.dv; col += ${WG}u) {
      // S₀ᵀk_t and S₀ᵀq_t for the chunk's tokens.
      for (var t = 0u; t < n; t++) {
        sk[t] = 0.0;
        sq[t] = 0.0;
      }
      for (var i = 0u; i < p.dk; i++) {
        let s = st[sb + i * p.dv + col];
        for (var t = 0u; t < n; t++) {
          sk[t] += s * kAt(t0 + t, kh, i);
          sq[t] += s * qAt(t0 + t, kh, i);
        }
      }
      for (var t = 0u; t < n; t++) {
        let G = gc[t];
        let v = a[p.vOff + (t0 + t) * p.vStride + h * p.dv + col];
        var r = v - exp(G) * sk[t] * ik[t];
        var corr = 0.0;
        var o = exp(G) * sq[t] * iq[t];
        for (var j = 0u; j < t; j++) {
          let d = exp(G - gc[j]);
          corr += d * kk[t * ${CH}u + j] * u[j];
          o += d * qk[t * ${CH}u + j] * u[j];
        }
        let ut = bc[t] * (r - corr);
        u[t] = ut;
        o += qk[t * ${CH}u + t] * ut;
        a[p.oOff + ((t0 + t) * p.Hv + h) * p.dv + col] = o * p.scale;
      }
      // S ← e^{G_n} S₀ + Σ_t e^{G_n − G_t} k_t u_tᵀ
      let Gn = gc[n - 1u];
      let eN = exp(Gn);
      for (var t = 0u; t < n; t++) { u[t] = u[t] * exp(Gn - gc[t]) * ik[t]; }
      for (var i = 0u; i < p.dk; i++) {
        var s = st[sb + i * p.dv + col] * eN;
        for (var t = 0u; t < n; t++) { s += kAt(t0 + t, kh, i) * u[t]; }
        st[sb + i * p.dv + col] = s;
      }
    }
  }
}
`);
}
