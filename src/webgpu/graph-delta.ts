// WebGPU implementations of the ops of src/graph/ops-delta.ts over the recording's rows: one
// position runs the rule's step kernel, several the chunked form.

import { DELTA_GATES, DELTA_RULE, GATED_RMS_NORM, KDA_GATES } from '../graph/ops-delta';
import { KernelError } from '../kernels/runtime';
import { kdaGates, kdaRule } from './dispatch/kda';
import { deltaChunked } from './dispatch/recurrent';
import { GPU_OPS as G } from './graph';


G.set(DELTA_GATES, (g, a) => {
  const H = a.g.width, T = a.ba.rows;
  if (a.ba.width !== 2 * H || a.g.rows !== T || a.beta.rows !== T || a.beta.width !== H) {
    throw new KernelError('delta_gates', `${g.label}: ${T}×${a.ba.width} to ${a.g.rows}×${H}`);
  }
  const aLog = g.B.vec(a.aLog, H), dtBias = g.B.vec(a.dtBias, H);
  g.emit((b) => [g.K.deltaGates(b, a.g.off, a.beta.off, a.ba.off, aLog, dtBias, H, T)]);
});

// q, k and v are read in place from the packed rows; the kernels l2-normalise q and k.
G.set(DELTA_RULE, (g, a) => {
  const { y, qkv, Hk, Hv, dk, dv } = a;
  const T = qkv.rows, C = 2 * Hk * dk + Hv * dv;
  if (Hv % Hk) throw new KernelError('gated_delta_rule', `${g.label}: Hk ${Hk} does not divide Hv ${Hv}`);
  const gw = a.perChannel ? Hv * dk : Hv;
  if (qkv.width !== C || y.width !== Hv * dv || y.rows !== T || a.g.width !== gw || a.g.rows !== T) {
    throw new KernelError('gated_delta_rule', `${g.label}: ${y.rows}×${y.width} from ${T}×${qkv.width} (Hk ${Hk}, Hv ${Hv}, dk ${dk}, dv ${dv})`);
  }
  const S = g.state(a.state);
  const q = qkv.off, k = q + Hk * dk, v = q + 2 * Hk * dk;
  if (a.perChannel) {
    // Kimi Delta Attention: the recording's tokens in order, one dispatch for any T.
    const o = { T, Hv, Hk, dk, dv, scale: a.scale, qkStride: C, vStride: C };
    g.emit((b) => [kdaRule(g.K, b, y.off, S, q, k, v, a.g.off, a.beta.off, o)]);
    return;
  }
  const o = { Hv, Hk, dk, dv, scale: a.scale, normQK: true };
  g.emit((b) => [T === 1
    ? g.K.deltaStep(b, y.off, S, q, k, v, a.g.off, a.beta.off, o)
    : deltaChunked(g.K, b, y.off, S, q, k, v, a.g.off, a.beta.off, { ...o, T, qkStride: C, vStride: C })]);
});

G.set(KDA_GATES, (g, a) => {
  const { dk } = a, C = a.g.width;
  if (C % dk) throw new KernelError('kda_gates', `${g.label}: width ${C} is not a multiple of dk ${dk}`);
  const aLog = g.B.vec(a.aLog, C / dk), dtBias = g.B.vec(a.dtBias, C);
  g.emit((b) => [kdaGates(g.K, b, { g: a.g.off, aLog, dtBias, rows: a.g.rows, C, dk })]);
});

G.set(GATED_RMS_NORM, (g, a) => {
  const rows = (a.x.rows * a.x.width) / a.dim;
  const w = g.B.vec(a.w, a.dim);
  g.emit((b) => [g.K.rmsNorm(b, a.y.off, a.x.off, w, rows, a.dim, a.eps, { gateZ: a.z.off })]);
});
