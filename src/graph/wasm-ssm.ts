// WASM implementations of the ops of ./ops-ssm.ts: the conv1d kernel, and the selective (Mamba-1) and
// SSD (Mamba-2) scans of src/kernels/ssm.ts over the chunk's T tokens (the SSD scan in its chunked
// form when the chunk is long enough).

import { softplus, swiglu } from '../kernels/act';
import { KernelError } from '../kernels/runtime';
import { selectiveScan, ssdScan, ssdScanScratchBytes } from '../kernels/ssm';
import type { Tensor } from './graph';
import { linear } from './ops';
import { SELECTIVE_SCAN, SSD_SCAN } from './ops-ssm';
import { WASM_OPS as W, type WasmGraph } from './wasm';

function tokens(g: WasmGraph, op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.rows !== g.T) throw new KernelError(op, `${g.label}: ${t.rows} rows for the ${g.T} tokens of the pass`);
}

function widths(g: WasmGraph, op: string, ...checks: [string, Tensor, number][]): void {
  for (const [name, t, w] of checks) if (t.width !== w) throw new KernelError(op, `${g.label}: ${name} is ${t.width} wide, expected ${w}`);
}

/** SSD chunk length: the longest of 64, 32, 16 the chunk can fill. */
function ssdChunk(maxChunk: number): 16 | 32 | 64 {
  return maxChunk >= 64 ? 64 : maxChunk >= 32 ? 32 : 16;
}


W.set(SELECTIVE_SCAN, (g, a) => {
  const T = a.x.rows, dInner = a.x.width, N = a.B.width;
  const dt = g.tmp(dInner, T), scratch = g.tmp(g.k.exports.selectiveScanScratchFloats(N), 1);
  if (g.dry) return;
  const op = 'selective_scan';
  tokens(g, op, a.y, a.x, a.delta, a.B, a.C, ...(a.z ? [a.z] : []));
  widths(g, op, ['y', a.y, dInner], ['C', a.C, N], ['delta', a.delta, a.dtW.cols], ['dt_proj', dt, a.dtW.rows], ...(a.z ? [['z', a.z, dInner] as [string, Tensor, number]] : []));
  const k = g.k;
  linear(g, dt, a.delta, a.dtW, a.dtBias);
  softplus(k, dt.off, dt.off, T * dInner);
  selectiveScan(k, a.y.off, g.state(a.state), a.x.off, dt.off, a.A, a.B.off, a.C.off, a.D, a.z ? a.z.off : 0, { T, dInner, N, scratch: scratch.off });
});

W.set(SSD_SCAN, (g, a) => {
  const { H, P, G, N } = a;
  const T = a.xbc.rows, HP = H * P, GN = G * N, row = HP + 2 * GN;
  const chunk = ssdChunk(g.maxChunk);
  const x = g.tmp(HP, T), B = g.tmp(GN, T), C = g.tmp(GN, T), dt = g.tmp(H, T);
  const scratch = g.tmp(ssdScanScratchBytes(g.k, { P, N, chunk }) / 4, 1);
  if (g.dry) return;
  const op = 'ssd_scan';
  tokens(g, op, a.y, a.xbc, a.dt, ...(a.z ? [a.z] : []));
  widths(g, op, ['y', a.y, HP], ['xbc', a.xbc, row], ['dt', a.dt, H], ...(a.z ? [['z', a.z, HP] as [string, Tensor, number]] : []));
  const k = g.k;
  // The scan's contiguous operands x, B, C from the packed rows.
  for (let t = 0; t < T; t++) {
    const o = a.xbc.off + t * row * 4;
    g.move(x.off + t * HP * 4, o, HP);
    g.move(B.off + t * GN * 4, o + HP * 4, GN);
    g.move(C.off + t * GN * 4, o + (HP + GN) * 4, GN);
  }
  // Δ = clamp(softplus(dt + dt_bias), limit)
  const raw = g.f32(a.dt), bias = k.arena.f32(a.dtBias, H), dv = g.f32(dt);
  for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) dv[t * H + h] = raw[t * H + h] + bias[h];
  softplus(k, dt.off, dt.off, T * H);
  const [lo, hi] = a.limit;
  if (lo > 0 || hi < Infinity) {
    const d2 = g.f32(dt);
    for (let i = 0; i < T * H; i++) d2[i] = Math.min(Math.max(d2[i], lo), hi);
  }
  ssdScan(k, a.y.off, g.state(a.state), x.off, dt.off, a.A, B.off, C.off, a.D, { T, H, P, G, N, mode: 'auto', chunk, scratch: scratch.off });
  if (a.z) swiglu(k, a.y.off, a.z.off, a.y.off, T * HP);
});
