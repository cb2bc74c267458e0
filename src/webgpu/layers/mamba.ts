// Selective state-space mixers (layers/mamba.ts Mamba1Mixer, Mamba2Mixer) for decode: the
// in-projection (+ bias), the causal depthwise conv step with bias and SiLU (window in `st`), the
// scan step with Δ = softplus(dt + dt_bias) and the SiLU(z) gate fused (state in `st`), and the
// out-projection (+ bias). Mamba-1 adds x_proj → [δ, B, C] (optionally RMS-normalised: FalconMamba
// weightless, Jamba weighted) and dt_proj; Mamba-2 finishes with the gated RMSNorm over d_inner.

import { Mamba1Mixer, Mamba2Mixer } from '../../layers/mamba';
import type { Weight } from '../../kernels/types';
import { KernelError } from '../../kernels/runtime';
import { registerMixer, type GpuBuilder } from '../builder';
import { EW, type Dispatch, type GpuBufs, type GpuKernels, type GpuWeight } from '../ops';
import { s6Wgsl, S6_PARAMS, ssdWgsl, SSD_PARAMS } from '../kernels/ssm.wgsl';

const ceil = (a: number, b: number) => Math.ceil(a / b);

// ---- kernel builders -----------------------------------------------------------------------------

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

// ---- mixers --------------------------------------------------------------------------------------

/**
 * A weight whose f32 rows are too short for the matmul's 4-wide units (Mamba's dt_proj has
 * time_step_rank columns): uploaded with each row zero-padded to a multiple of 4, so it reads an
 * input of that padded width whose extra floats are never written (zero).
 */
function paddedWeight(B: GpuBuilder, w: Weight, label: string): { g: GpuWeight; cols: number } {
  if (w.dtype !== 'f32' && w.dtype !== 'f16' && w.dtype !== 'bf16') return { g: B.weight(w, label), cols: w.cols };
  const cols = ceil(w.cols, 4) * 4;
  if (cols === w.cols) return { g: B.weight(w, label), cols };
  const src = new Float32Array(B.rawWeight(w).bytes.slice().buffer, 0, w.rows * w.cols);
  const dst = new Float32Array(w.rows * cols);
  for (let r = 0; r < w.rows; r++) dst.set(src.subarray(r * w.cols, (r + 1) * w.cols), r * cols);
  B.weightBytes += dst.byteLength;
  return { g: B.K.weight(new Uint8Array(dst.buffer), 'f32', w.rows, cols, 1, label), cols };
}

registerMixer(Mamba1Mixer, (B: GpuBuilder, m: Mamba1Mixer, x: number, out: number) => {
  const { hidden, dInner, N, R, W } = m.cfg;
  const A = B.act, p = m.prefix;
  const dtP = paddedWeight(B, m.dtW, `${p}.dt_proj`);
  const xz = A.take(2 * dInner), z = xz + dInner, delta = A.take(dtP.cols), bb = A.take(N), cc = A.take(N), dt = A.take(dInner), y = A.take(dInner);
  const inX = B.weight(m.inX, `${p}.in_proj.x`), inZ = B.weight(m.inZ, `${p}.in_proj.z`);
  const xD = B.weight(m.xDelta, `${p}.x_proj.dt`), xB = B.weight(m.xB, `${p}.x_proj.B`), xC = B.weight(m.xC, `${p}.x_proj.C`);
  const outW = B.weight(m.outW, `${p}.out_proj`);
  const inBias = m.inBias ? B.vec(m.inBias, 2 * dInner) : -1, outBias = m.outB ? B.vec(m.outB, hidden) : -1;
  const convW = B.vec(m.convW, dInner * W), convB = m.convB ? B.vec(m.convB, dInner) : -1;
  const dtB = B.vec(m.dtB, dInner), Aneg = B.vec(m.A, dInner * N), D = B.vec(m.D, dInner);
  const norm = m.cfg.innerNorm;
  const weighted = norm?.weighted ?? false;
  const nD = weighted ? B.vec(m.dtNorm, R) : -1, nB = weighted ? B.vec(m.bNorm, N) : -1, nC = weighted ? B.vec(m.cNorm, N) : -1;
  const convSt = B.state(dInner * (W - 1), 'fixed', m.convState), h = B.state(dInner * N, 'fixed', m.ssmState);
  B.emit((b) => {
    const K = B.K;
    const list: Dispatch[] = [K.matmul(b, xz, x, inX, 1), K.matmul(b, z, x, inZ, 1)];
    if (inBias >= 0) list.push(K.elementwise(b, EW.addConst, xz, xz, inBias, 2 * dInner));
    list.push(ssmConv(K, b, xz, xz, convW, convB, convSt, 1, dInner, W));
    list.push(K.matmul(b, delta, xz, xD, 1), K.matmul(b, bb, xz, xB, 1), K.matmul(b, cc, xz, xC, 1));
    if (norm) {
      list.push(K.rmsNorm(b, delta, delta, nD, 1, R, norm.eps), K.rmsNorm(b, bb, bb, nB, 1, N, norm.eps), K.rmsNorm(b, cc, cc, nC, 1, N, norm.eps));
    }
    list.push(K.matmul(b, dt, delta, dtP.g, 1));
    list.push(selectiveScanStep(K, b, y, h, xz, dt, Aneg, bb, cc, D, z, { T: 1, dI: dInner, N, dtBias: dtB }));
    list.push(K.matmul(b, out, y, outW, 1));
    if (outBias >= 0) list.push(K.elementwise(b, EW.addConst, out, out, outBias, hidden));
    return list;
  });
});

registerMixer(Mamba2Mixer, (B: GpuBuilder, m: Mamba2Mixer, x: number, out: number) => {
  const { hidden, H, P, G, N, W } = m.cfg;
  const { dInner, convDim } = m;
  const A = B.act, p = m.prefix, GN = G * N;
  // [z (d_inner) | xBC (conv_dim) | dt (H)], in_proj's row order (one bias vector over all of it).
  const all = dInner + convDim + H;
  const zxd = A.take(all), z = zxd, xbc = zxd + dInner, dt = zxd + dInner + convDim, y = A.take(dInner);
  const inZ = B.weight(m.inZ, `${p}.in_proj.z`), inXBC = B.weight(m.inXBC, `${p}.in_proj.xBC`), inDt = B.weight(m.inDt, `${p}.in_proj.dt`);
  const outW = B.weight(m.outW, `${p}.out_proj`);
  const inBias = m.inBias ? B.vec(m.inBias, all) : -1, outBias = m.outB ? B.vec(m.outB, hidden) : -1;
  const convW = B.vec(m.convW, convDim * W), convB = m.convB ? B.vec(m.convB, convDim) : -1;
  const dtBias = B.constant(m.dtBias), Aneg = B.vec(m.A, H), D = B.vec(m.D, H), normW = B.vec(m.normW, dInner);
  const convSt = B.state(convDim * (W - 1), 'fixed', m.convState), h = B.state(H * P * N, 'fixed', m.ssmState);
  B.emit((b) => {
    const K = B.K;
    const list: Dispatch[] = [K.matmul(b, z, x, inZ, 1), K.matmul(b, xbc, x, inXBC, 1), K.matmul(b, dt, x, inDt, 1)];
    if (inBias >= 0) list.push(K.elementwise(b, EW.addConst, zxd, zxd, inBias, all));
    list.push(ssmConv(K, b, xbc, xbc, convW, convB, convSt, 1, convDim, W));
    list.push(ssdScanStep(K, b, y, h, xbc, dt, Aneg, xbc + dInner, xbc + dInner + GN, D, z, { T: 1, H, P, G, N, dtBias, limit: m.cfg.dtLimit }));
    list.push(K.rmsNorm(b, y, y, normW, 1, dInner, m.cfg.normEps));
    list.push(K.matmul(b, out, y, outW, 1));
    if (outBias >= 0) list.push(K.elementwise(b, EW.addConst, out, out, outBias, hidden));
    return list;
  });
});
