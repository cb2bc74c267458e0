// WASM implementations of the ops of ./ops-delta.ts.

import { mul, silu } from '../kernels/act';
import { linearAttention, linearAttentionScratchBytes } from '../kernels/linear_attention';
import { l2Norm, rmsNorm } from '../kernels/norm';
import { KernelError } from '../kernels/runtime';
import { sameShape } from './graph';
import { DELTA_GATES, DELTA_RULE, GATED_RMS_NORM, KDA_GATES } from './ops-delta';
import { WASM_OPS as W } from './wasm';


W.set(DELTA_GATES, (g, a) => {
  if (g.dry) return;
  const H = a.g.width, T = a.ba.rows;
  sameShape('delta_gates', a.g, a.beta);
  if (a.ba.width !== 2 * H || a.g.rows !== T) throw new KernelError('delta_gates', `${g.label}: ${T}×${a.ba.width} to ${a.g.rows}×${H}`);
  const ba = g.f32(a.ba), gv = g.f32(a.g), bv = g.f32(a.beta);
  const aLog = g.k.arena.f32(a.aLog, H), dtBias = g.k.arena.f32(a.dtBias, H);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const x = ba[t * 2 * H + H + h] + dtBias[h];
      const sp = x > 20 ? x : Math.log1p(Math.exp(x));
      gv[t * H + h] = -Math.exp(aLog[h]) * sp;
      bv[t * H + h] = 1 / (1 + Math.exp(-ba[t * 2 * H + h]));
    }
  }
});

// q and k are repeated from Hk to Hv heads and v made contiguous [T, Hv, dv] for the scan kernel,
// which runs the chunked (WY) form for chunks of at least its chunk length and the step form otherwise.
W.set(DELTA_RULE, (g, a) => {
  const { y, qkv, Hk, Hv, dk, dv } = a;
  const T = qkv.rows, C = 2 * Hk * dk + Hv * dv;
  const q = g.tmp(Hv * dk, T), k = g.tmp(Hv * dk, T), v = g.tmp(Hv * dv, T);
  const decay = a.perChannel ? 'vector' : 'scalar';
  const scan = g.tmp(Math.ceil(linearAttentionScratchBytes(g.k, { dk, dv, decay, delta: true }) / 4), 1);
  if (g.dry) return;
  if (Hv % Hk) throw new KernelError('gated_delta_rule', `${g.label}: Hk ${Hk} does not divide Hv ${Hv}`);
  const gw = a.perChannel ? Hv * dk : Hv;
  if (qkv.width !== C || y.width !== Hv * dv || y.rows !== T || a.g.width !== gw || a.g.rows !== T || a.beta.width !== Hv || a.beta.rows !== T) {
    throw new KernelError('gated_delta_rule', `${g.label}: ${y.rows}×${y.width} from ${T}×${qkv.width} (Hk ${Hk}, Hv ${Hv}, dk ${dk}, dv ${dv})`);
  }
  const r = Hv / Hk;
  for (let t = 0; t < T; t++) {
    const row = qkv.off + t * C * 4;
    for (let h = 0; h < Hv; h++) {
      const s = row + Math.floor(h / r) * dk * 4, d = (t * Hv + h) * dk * 4;
      g.move(q.off + d, s, dk);
      g.move(k.off + d, s + Hk * dk * 4, dk);
    }
    g.move(v.off + t * Hv * dv * 4, row + 2 * Hk * dk * 4, Hv * dv);
  }
  l2Norm(g.k, q.off, q.off, T * Hv, dk, 1e-6);
  l2Norm(g.k, k.off, k.off, T * Hv, dk, 1e-6);
  linearAttention(g.k, y.off, g.state(a.state), q.off, k.off, v.off, {
    T, H: Hv, dk, dv, decay, g: a.g.off, beta: a.beta.off, scale: a.scale, mode: 'auto', scratch: scan.off,
  });
});

W.set(KDA_GATES, (g, a) => {
  if (g.dry) return;
  const { dk } = a, C = a.g.width;
  if (C % dk) throw new KernelError('kda_gates', `${g.label}: width ${C} is not a multiple of dk ${dk}`);
  const H = C / dk, gv = g.f32(a.g);
  const aLog = g.k.arena.f32(a.aLog, H), dtBias = g.k.arena.f32(a.dtBias, C);
  for (let t = 0; t < a.g.rows; t++) {
    for (let c = 0; c < C; c++) {
      const x = gv[t * C + c] + dtBias[c];
      gv[t * C + c] = -Math.exp(aLog[Math.floor(c / dk)]) * (x > 20 ? x : Math.log1p(Math.exp(x)));
    }
  }
});

W.set(GATED_RMS_NORM, (g, a) => {
  const gate = g.tmp(a.z.width, a.z.rows);
  if (g.dry) return;
  sameShape('gated_rms_norm', a.y, a.x, a.z);
  if (a.x.width % a.dim) throw new KernelError('gated_rms_norm', `${g.label}: width ${a.x.width} is not a multiple of ${a.dim}`);
  const n = a.x.rows * a.x.width;
  rmsNorm(g.k, a.y.off, a.x.off, a.w, n / a.dim, a.dim, a.eps);
  silu(g.k, gate.off, a.z.off, n);
  mul(g.k, a.y.off, a.y.off, gate.off, n);
});
