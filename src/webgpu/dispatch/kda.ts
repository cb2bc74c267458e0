// Builders of the Kimi Delta Attention kernels (../kernels/kda.wgsl), over float offsets of `a`
// (activations), `st` (state) and `c` (constants), in the style of ops.ts.

import { KernelError } from '../../kernels/runtime';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import { KDA_GATES_PARAMS, KDA_MAX_DK, KDA_PARAMS, KDA_WG, kdaGatesWgsl, kdaWgsl } from '../kernels/kda.wgsl';

const ceil = (a: number, b: number) => Math.ceil(a / b);

/** g ← −exp(c[aLog + h])·softplus(g + c[dtBias + ch]) in place over rows of C = H·dk floats. */
export function kdaGates(K: GpuKernels, b: GpuBufs, o: { g: number; aLog: number; dtBias: number; rows: number; C: number; dk: number }): Dispatch {
  const n = o.rows * o.C;
  const { nx, ny } = K.split(ceil(n, 256));
  return K.dispatch('kda_gates', kdaGatesWgsl, KDA_GATES_PARAMS, { n, C: o.C, dk: o.dk, gOff: o.g, aLogOff: o.aLog, dtOff: o.dtBias, nx }, b, [nx, ny, 1]);
}

/**
 * The per-channel gated delta rule over T tokens in order (see kda.wgsl): q, k of token t at q/k +
 * t·qkStride (key-head-major [Hk, dk]); v at v + t·vStride ([Hv, dv]); g [T, Hv, dk]; β [T, Hv];
 * o [T, Hv, dv]; S [Hv, dk, dv] at st[S].
 */
export function kdaRule(K: GpuKernels, b: GpuBufs, out: number, S: number, q: number, k: number, v: number, g: number, beta: number,
  o: { T: number; Hv: number; Hk: number; dk: number; dv: number; scale: number; qkStride: number; vStride: number }): Dispatch {
  if (o.dk > KDA_MAX_DK) throw new KernelError('webgpu', `kda: key head size ${o.dk} > ${KDA_MAX_DK}`);
  if (o.Hv % o.Hk) throw new KernelError('webgpu', `kda: Hk ${o.Hk} does not divide Hv ${o.Hv}`);
  return K.dispatch('kda_rule', kdaWgsl, KDA_PARAMS, {
    T: o.T, Hv: o.Hv, Hk: o.Hk, dk: o.dk, dv: o.dv, qOff: q, kOff: k, vOff: v, qkStride: o.qkStride, vStride: o.vStride,
    oOff: out, gOff: g, betaOff: beta, sOff: S, scale: o.scale,
  }, b, [o.Hv, ceil(o.dv, KDA_WG), 1]);
}
