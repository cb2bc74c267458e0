// Builders of the mLSTM kernels (../kernels/mlstm.wgsl), over float offsets of `a` (activations),
// `st` (state) and `c` (constants), in the style of ops.ts.

import { KernelError } from '../../kernels/runtime';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import { MLSTM_MAX_DK, MLSTM_OUTPUT_PARAMS, MLSTM_PARAMS, MLSTM_WG, mlstmOutputWgsl, mlstmWgsl } from '../kernels/mlstm.wgsl';

const ceil = (a: number, b: number) => Math.ceil(a / b);

/**
 * The mLSTM recurrence over T tokens in order: q, k [T, H, dk], v, y [T, H, dv], i, f [T, H] in `a`;
 * the state [C (H·dk·dv) | n (H·dk) | m (H)] at st[S].
 */
export function mlstmRule(K: GpuKernels, b: GpuBufs, o: { y: number; S: number; q: number; k: number; v: number; i: number; f: number; T: number; H: number; dk: number; dv: number; eps: number }): Dispatch {
  if (o.dk > MLSTM_MAX_DK) throw new KernelError('webgpu', `mlstm: query/key head size ${o.dk} > ${MLSTM_MAX_DK}`);
  return K.dispatch('mlstm_rule', mlstmWgsl, MLSTM_PARAMS, {
    T: o.T, H: o.H, dk: o.dk, dv: o.dv, qOff: o.q, kOff: o.k, vOff: o.v, iOff: o.i, fOff: o.f, yOff: o.y, sOff: o.S, eps: o.eps,
  }, b, [o.H, 1, 1]);
}

/** y ← σ(o) ⊙ (LayerNorm_head(y)·c[w] + c[b]) over rows·H heads of dv floats (b < 0: no bias). */
export function mlstmOutput(K: GpuKernels, b: GpuBufs, o: { y: number; o: number; w: number; b: number; rows: number; H: number; dv: number; eps: number }): Dispatch {
  const n = o.rows * o.H;
  return K.dispatch('mlstm_output', mlstmOutputWgsl, MLSTM_OUTPUT_PARAMS, {
    n, H: o.H, dv: o.dv, yOff: o.y, oOff: o.o, wOff: o.w, bOff: Math.max(o.b, 0), hasB: o.b >= 0 ? 1 : 0, eps: o.eps,
  }, b, [ceil(n, MLSTM_WG), 1, 1]);
}
