// Builders of the RWKV-7 kernels (../kernels/rwkv7.wgsl), over float offsets of `a` (activations),
// `st` (state) and `c` (constants), in the style of ops.ts.

import { KernelError } from '../../kernels/runtime';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import { keysWgsl, KEYS_PARAMS, outputWgsl, OUTPUT_PARAMS, RWKV7_MAX_DK, RWKV7_WG, wkv7Wgsl, WKV7_PARAMS } from '../kernels/rwkv7.wgsl';

const ceil = (a: number, b: number) => Math.ceil(a / b);

/**
 * κ̂ = normalize(k ⊙ c[kK]) per head into kappa, then k ← k + (k ⊙ (a − 1)) ⊙ c[kA] in place, over
 * rows·H heads of dk floats ('add': / sqrt(Σκ² + eps); 'clamp': / max(‖κ‖, eps)).
 */
export function rwkv7Keys(K: GpuKernels, b: GpuBufs, o: { kappa: number; k: number; a: number; kK: number; kA: number; rows: number; H: number; dk: number; mode: 'add' | 'clamp'; eps: number }): Dispatch {
  const n = o.rows * o.H;
  return K.dispatch('rwkv7_keys', keysWgsl, KEYS_PARAMS, {
    n, H: o.H, dk: o.dk, kOff: o.k, aOff: o.a, kappaOff: o.kappa, kKOff: o.kK, kAOff: o.kA, clampNorm: o.mode === 'clamp' ? 1 : 0, eps: o.eps,
  }, b, [ceil(n, RWKV7_WG), 1, 1]);
}

/**
 * WKV-7 over T tokens: per head u = Sᵀκ̂, S ← Diag(exp w) S − (κ̂ ⊙ a) uᵀ + k vᵀ, y = Sᵀ r. r, w, k,
 * kappa, a [T, H, dk] and v, y [T, H, dv] in `a`; S [H, dk, dv] at st[S].
 */
export function wkv7(K: GpuKernels, b: GpuBufs, o: { y: number; S: number; r: number; w: number; k: number; v: number; kappa: number; a: number; T: number; H: number; dk: number; dv: number }): Dispatch {
  if (o.dk > RWKV7_MAX_DK) throw new KernelError('webgpu', `wkv7: head_dim ${o.dk} > ${RWKV7_MAX_DK}`);
  return K.dispatch('rwkv7_wkv', wkv7Wgsl, WKV7_PARAMS, {
    T: o.T, H: o.H, dk: o.dk, dv: o.dv, rOff: o.r, wOff: o.w, kOff: o.k, vOff: o.v, kappaOff: o.kappa, aOff: o.a, yOff: o.y, sOff: o.S,
  }, b, [o.H, ceil(o.dv, RWKV7_WG), 1]);
}

/** y ← (GroupNorm_h(y)·c[gw] + c[gb] + (Σ r ⊙ k ⊙ c[rK])·v) ⊙ g over rows·H heads. */
export function rwkv7Output(K: GpuKernels, b: GpuBufs, o: { y: number; r: number; k: number; v: number; g: number; rK: number; gw: number; gb: number; rows: number; H: number; dk: number; dv: number; eps: number }): Dispatch {
  const n = o.rows * o.H;
  return K.dispatch('rwkv7_output', outputWgsl, OUTPUT_PARAMS, {
    n, H: o.H, dk: o.dk, dv: o.dv, yOff: o.y, rOff: o.r, kOff: o.k, vOff: o.v, gOff: o.g, rKOff: o.rK, gwOff: o.gw, gbOff: o.gb, eps: o.eps,
  }, b, [ceil(n, RWKV7_WG), 1, 1]);
}
