// Builders of the recurrent-layer kernels (../kernels/recurrent.wgsl, ../kernels/delta_chunked.wgsl), over float offsets of `a`
// (activations), `st` (state) and `c` (constants), in the style of ops.ts.

import { KernelError } from '../../kernels/runtime';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import {
  lightningWgsl, LIGHTNING_PARAMS, RACT, ractWgsl, RACT_PARAMS, rglruWgsl, RGLRU_PARAMS,
  shiftWgsl, SHIFT_PARAMS, wkvWgsl, WKV_PARAMS,
} from '../kernels/recurrent.wgsl';
import { deltaChunkedWgsl, DELTA_CHUNK_PARAMS } from '../kernels/delta_chunked.wgsl';

export { RACT };

const ceil = (a: number, b: number) => Math.ceil(a / b);

/** Causal depthwise conv1d in place on x[T, C] (taps c[w] [C, W], bias c[bias] or none when < 0), state st[state] [C, W−1]. */
export function convBias(K: GpuKernels, b: GpuBufs, x: number, w: number, bias: number, state: number, T: number, C: number, W: number): Dispatch {
  return K.conv1d(b, x, w, state, T, C, W, 'none', { bias });
}

/**
 * Lightning attention over T tokens: per head S ← exp(−c[slopes + h]) S + k vᵀ, o = Sᵀ q (no scale).
 * q/k/v of head h, token t at q/k/v + t·tokStride + h·headStride; o [T, H, d]; S [H, d, d] at st[S].
 */
export function lightning(K: GpuKernels, b: GpuBufs, o: number, S: number, q: number, k: number, v: number, slopes: number,
  s: { T: number; H: number; d: number; headStride: number; tokStride: number }): Dispatch {
  if (s.d > 256) throw new KernelError('webgpu', `lightning: head_dim ${s.d} > 256`);
  return K.dispatch('rec_lightning', lightningWgsl, LIGHTNING_PARAMS, {
    T: s.T, H: s.H, d: s.d, qOff: q, kOff: k, vOff: v, headStride: s.headStride, tokStride: s.tokStride, oOff: o, sOff: S, slopeOff: slopes,
  }, b, [s.H, 1, 1]);
}

/** RWKV-4 WKV over T tokens of C channels: key/value/out [T, C]; state st[state] [3, C]; decay/first in c. */
export function wkv4(K: GpuKernels, b: GpuBufs, out: number, state: number, key: number, value: number, decay: number, first: number, T: number, C: number): Dispatch {
  return K.dispatch('rec_wkv4', wkvWgsl, WKV_PARAMS, { T, C, kOff: key, vOff: value, oOff: out, sOff: state, decayOff: decay, firstOff: first }, b, [ceil(C, 64), 1, 1]);
}

/** RWKV token shift: nMix lerps of x[T, D] with the previous token (state st[shift]), out_j at out + j·outStride. */
export function tokenShift(K: GpuKernels, b: GpuBufs, out: number, x: number, shift: number, mixes: number, nMix: number, T: number, D: number, outStride = T * D): Dispatch {
  return K.dispatch('rec_shift', shiftWgsl, SHIFT_PARAMS, { T, D, nMix, xOff: x, shiftOff: shift, mixOff: mixes, outOff: out, outStride }, b, [ceil(D, 64), 1, 1]);
}

/** RG-LRU over T tokens of W channels (bw per head): out = h ⊙ y with h at st[h]; gate matrices, biases and log-a base in c. */
export function rglru(K: GpuKernels, b: GpuBufs, out: number, h: number, x: number, y: number,
  c: { mi: number; ma: number; bi: number; ba: number; logA: number }, T: number, W: number, bw: number): Dispatch {
  return K.dispatch('rec_rglru', rglruWgsl, RGLRU_PARAMS, {
    T, W, bw, xOff: x, yOff: y, oOff: out, hOff: h, miOff: c.mi, maOff: c.ma, biOff: c.bi, baOff: c.ba, logAOff: c.logA,
  }, b, [ceil(W, 64), 1, 1]);
}

/** In-place activation over n floats of `a` (RACT.relu2, RACT.geluTanh). */
export function ract(K: GpuKernels, b: GpuBufs, op: number, x: number, n: number): Dispatch {
  const { nx, ny } = K.split(ceil(n, 256));
  return K.dispatch('rec_act', ractWgsl, RACT_PARAMS, { n, op, off: x, nx }, b, [nx, ny, 1]);
}

/**
 * Gated delta rule over T tokens in chunks of `chunk` (8, 16 or 32), equal to T deltaStep dispatches:
 * q, k of token t at q/k + t·qkStride (key-head-major [Hk, dk]); v at v + t·vStride ([Hv, dv]); g, β [T, Hv];
 * o [T, Hv, dv]; S [Hv, dk, dv] at st[S].
 */
export function deltaChunked(K: GpuKernels, b: GpuBufs, out: number, S: number, q: number, k: number, v: number, g: number, beta: number,
  o: { T: number; Hv: number; Hk: number; dk: number; dv: number; scale: number; normQK: boolean; qkStride?: number; vStride?: number; chunk?: 8 | 16 | 32 }): Dispatch {
  const CH = o.chunk ?? 16;
  if (![8, 16, 32].includes(CH)) throw new KernelError('webgpu', `deltaChunked: chunk ${CH} is not 8, 16 or 32`);
  if (o.Hv % o.Hk) throw new KernelError('webgpu', `deltaChunked: Hk ${o.Hk} does not divide Hv ${o.Hv}`);
  return K.dispatch(`rec_delta_chunked_${CH}`, deltaChunkedWgsl(CH), DELTA_CHUNK_PARAMS, {
    T: o.T, Hv: o.Hv, Hk: o.Hk, dk: o.dk, dv: o.dv, qOff: q, kOff: k, vOff: v, qkStride: o.qkStride ?? o.Hk * o.dk, vStride: o.vStride ?? o.Hv * o.dv,
    oOff: out, gOff: g, betaOff: beta, sOff: S, normQK: o.normQK ? 1 : 0, scale: o.scale,
  }, b, [o.Hv, 1, 1]);
}
