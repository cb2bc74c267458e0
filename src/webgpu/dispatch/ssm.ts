// Builders of the state-space kernels (../kernels/ssm.wgsl and the conv kernel of ../ops), over float
// offsets of `a` (activations), `st` (state) and `c` (constants), in the style of ops.ts.

import { KernelError } from '../../kernels/runtime';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import { s6Wgsl, S6_PARAMS, ssdWgsl, SSD_PARAMS } from '../kernels/ssm.wgsl';

const ceil = (a: number, b: number) => Math.ceil(a / b);

/**
 * Causal depthwise conv over T tokens of C channels: y[t] = act(bias + taps · [window, x[t]]); taps
 * c[w] ([C, W]), bias c[bias] (none when < 0), window st[state] ([C, W−1]). y may equal x.
 */
export function ssmConv(K: GpuKernels, b: GpuBufs, y: number, x: number, w: number, bias: number, state: number, T: number, C: number, W: number,
  o: { silu?: boolean; xStride?: number; yStride?: number } = {}): Dispatch {
  if (W < 2 || W > 4) throw new KernelError('webgpu', `ssmConv: W ${W} is not 2, 3 or 4`);
  return K.conv1d(b, x, w, state, T, C, W, o.silu === false ? 'none' : 'silu', { bias, y, xStride: o.xStride, yStride: o.yStride });
}

/**
 * Mamba-1 scan over T tokens: y [T, dI] from x, dt, z (a offsets; z < 0: no gate), B, C ([T, N] rows
 * bcStride apart), A [dI, N] and D [dI] at c offsets, state h [dI, N] at st[h]. dtBias ≥ 0: dt is the
 * raw projection and Δ = softplus(dt + c[dtBias]); otherwise dt is Δ.
 */
export function selectiveScanStep(K: GpuKernels, b: GpuBufs, y: number, h: number, x: number, dt: number, A: number, B: number, C: number, D: number, z: number,
  o: { T: number; dI: number; N: number; dtBias?: number; softplus?: boolean; bcStride?: number }): Dispatch {
  const sp = o.softplus ?? o.dtBias !== undefined;
  return K.dispatch('ssm_s6', s6Wgsl, S6_PARAMS, {
    T: o.T, dI: o.dI, N: o.N, xOff: x, dtOff: dt, dtMode: sp ? 1 : 0, dtbOff: o.dtBias ?? 0, hasDtB: o.dtBias !== undefined ? 1 : 0,
    aOff: A, bOff: B, cOff: C, bcStride: o.bcStride ?? o.N, dOff: D, zOff: Math.max(z, 0), hasZ: z >= 0 ? 1 : 0, yOff: y, hOff: h,
  }, b, [ceil(o.dI, 64), 1, 1]);
}

/**
 * Mamba-2 scan over T tokens: y [T, H·P] from x (rows xStride apart), dt ([T, H] rows dtStride apart),
 * B, C ([T, G·N] rows bcStride apart), z (< 0: no gate), A [H], D [H] (< 0: none) at c offsets, state
 * h [H, P, N] at st[h]. dtBias given: Δ = clamp(softplus(dt + c[dtBias]), limit); otherwise dt is Δ.
 */
export function ssdScanStep(K: GpuKernels, b: GpuBufs, y: number, h: number, x: number, dt: number, A: number, B: number, C: number, D: number, z: number,
  o: { T: number; H: number; P: number; G: number; N: number; xStride?: number; bcStride?: number; dtStride?: number; dtBias?: number; limit?: [number, number] }): Dispatch {
  const { T, H, P, G, N } = o;
  if (H % G) throw new KernelError('webgpu', `ssdScanStep: G ${G} does not divide H ${H}`);
  const [lo, hi] = o.limit ?? [0, Infinity];
  const F = 3.4e38;
  return K.dispatch('ssm_ssd', ssdWgsl, SSD_PARAMS, {
    T, H, P, G, N, xOff: x, xStride: o.xStride ?? H * P, bOff: B, cOff: C, bcStride: o.bcStride ?? G * N, dtOff: dt, dtStride: o.dtStride ?? H,
    dtMode: o.dtBias !== undefined ? 1 : 0, dtbOff: o.dtBias ?? 0, aOff: A, dOff: Math.max(D, 0), hasD: D >= 0 ? 1 : 0,
    zOff: Math.max(z, 0), hasZ: z >= 0 ? 1 : 0, yOff: y, hOff: h, lo: Math.max(lo, -F), hi: Math.min(hi, F),
  }, b, [ceil(H * P, 64), 1, 1]);
}
