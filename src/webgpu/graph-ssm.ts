// WebGPU implementations of the ops of src/graph/ops-ssm.ts, for one position: the conv step (window
// in `st`), and the scan steps with Δ = softplus(dt + dt_bias) (clamped for Mamba-2) and the SiLU(z)
// gate fused into the scan dispatch (state in `st`).

import { SELECTIVE_SCAN, SSD_SCAN } from '../graph/ops-ssm';
import type { Tensor } from '../graph/graph';
import { KernelError } from '../kernels/runtime';
import type { Weight } from '../kernels/types';
import type { GpuBuilder } from './builder';
import { selectiveScanStep, ssdScanStep, } from './dispatch/ssm';
import { GPU_OPS as G, type GpuGraph } from './graph';
import type { GpuWeight } from './ops';

const ceil = (a: number, b: number) => Math.ceil(a / b);

function oneRow(g: GpuGraph, op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.rows !== 1) throw new KernelError('webgpu', `${g.label}: ${op} over ${t.rows} rows (the WebGPU recording is of one position)`);
}

/**
 * A weight whose f32 rows are too short for the matmul's 4-wide units (Mamba's dt_proj has
 * time_step_rank columns), uploaded with each row zero-padded to a multiple of 4. Its input must be
 * a tensor of `w.cols` floats whose padding up to that multiple is never written: temporaries are
 * (their sizes are rounded up to 4 floats, and ops write only their width), so it reads zeros there.
 */
function paddedWeight(B: GpuBuilder, w: Weight, label: string): GpuWeight {
  if (w.dtype !== 'f32' && w.dtype !== 'f16' && w.dtype !== 'bf16') return B.weight(w, label);
  const cols = ceil(w.cols, 4) * 4;
  if (cols === w.cols) return B.weight(w, label);
  const src = new Float32Array(B.rawWeight(w).bytes.slice().buffer, 0, w.rows * w.cols);
  const dst = new Float32Array(w.rows * cols);
  for (let r = 0; r < w.rows; r++) dst.set(src.subarray(r * w.cols, (r + 1) * w.cols), r * cols);
  B.weightBytes += dst.byteLength;
  return B.K.weight(new Uint8Array(dst.buffer), 'f32', w.rows, cols, 1, label);
}


G.set(SELECTIVE_SCAN, (g, a) => {
  oneRow(g, 'selective_scan', a.y, a.x, a.delta, a.B, a.C);
  const dI = a.x.width, N = a.B.width, B = g.B;
  if (a.delta.width !== a.dtW.cols) throw new KernelError('webgpu', `${g.label}: selective_scan δ is ${a.delta.width} wide for a dt_proj of ${a.dtW.cols} columns`);
  const dtW = paddedWeight(B, a.dtW, a.dtW.name ?? `${g.label}.dt_proj`);
  const dt = g.tmp(dI);
  const dtBias = B.vec(a.dtBias, dI), A = B.vec(a.A, dI * N), D = B.vec(a.D, dI), h = g.state(a.state);
  const z = a.z ? a.z.off : -1;
  g.emit((b) => [
    g.K.matmul(b, dt.off, a.delta.off, dtW, 1),
    selectiveScanStep(g.K, b, a.y.off, h, a.x.off, dt.off, A, a.B.off, a.C.off, D, z, { T: 1, dI, N, dtBias }),
  ]);
});

G.set(SSD_SCAN, (g, a) => {
  oneRow(g, 'ssd_scan', a.y, a.xbc, a.dt);
  const { H, P, G: nG, N } = a, B = g.B;
  const HP = H * P, GN = nG * N, row = a.xbc.width, x = a.xbc.off;
  const dtBias = B.vec(a.dtBias, H), A = B.vec(a.A, H), D = B.vec(a.D, H), h = g.state(a.state);
  const z = a.z ? a.z.off : -1;
  g.emit((b) => [ssdScanStep(g.K, b, a.y.off, h, x, a.dt.off, A, x + HP, x + HP + GN, D, z, {
    T: 1, H, P, G: nG, N, xStride: row, bcStride: row, dtStride: H, dtBias, limit: a.limit,
  })]);
});
