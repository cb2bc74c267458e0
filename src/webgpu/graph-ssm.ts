// WebGPU implementations of the ops of src/graph/ops-ssm.ts: the scans run over the recording's rows
// in order (one position, or a prompt chunk), with Δ = softplus(dt + dt_bias) (clamped for Mamba-2)
// and the SiLU(z) gate fused into the scan dispatch (state in `st`).

import { SELECTIVE_SCAN, SSD_SCAN } from '../graph/ops-ssm';
import { sameShape } from '../graph/graph';
import { KernelError } from '../kernels/runtime';
import { selectiveScanStep, ssdScanStep } from './dispatch/ssm';
import { GPU_OPS as G } from './graph';

// dt_proj's f32 rows are time_step_rank long (any length: the matmul sums the columns past its
// 4-wide units separately).
G.set(SELECTIVE_SCAN, (g, a) => {
  sameShape('selective_scan', a.y, a.x);
  sameShape('selective_scan', a.B, a.C);
  const T = a.x.rows, dI = a.x.width, N = a.B.width, B = g.B;
  if (a.delta.rows !== T || a.B.rows !== T || (a.z && (a.z.rows !== T || a.z.width !== dI))) throw new KernelError('webgpu', `${g.label}: selective_scan inputs of different row counts`);
  if (a.delta.width !== a.dtW.cols) throw new KernelError('webgpu', `${g.label}: selective_scan δ is ${a.delta.width} wide for a dt_proj of ${a.dtW.cols} columns`);
  const dtW = B.weight(a.dtW, a.dtW.name ?? `${g.label}.dt_proj`);
  const dt = g.tmp(dI, T);
  const dtBias = B.vec(a.dtBias, dI), A = B.vec(a.A, dI * N), D = B.vec(a.D, dI), h = g.state(a.state);
  const z = a.z ? a.z.off : -1;
  g.emit((b) => [
    g.K.matmul(b, dt.off, a.delta.off, dtW, T, { xStride: a.delta.width, yStride: dI, perOutput: T > 1 }),
    selectiveScanStep(g.K, b, a.y.off, h, a.x.off, dt.off, A, a.B.off, a.C.off, D, z, { T, dI, N, dtBias, bcStride: N }),
  ]);
});

G.set(SSD_SCAN, (g, a) => {
  const T = a.xbc.rows;
  if (a.y.rows !== T || a.dt.rows !== T || (a.z && a.z.rows !== T)) throw new KernelError('webgpu', `${g.label}: ssd_scan inputs of different row counts`);
  const { H, P, G: nG, N } = a, B = g.B;
  const HP = H * P, GN = nG * N, row = a.xbc.width, x = a.xbc.off;
  if (a.y.width !== HP || a.dt.width !== H || (a.z && a.z.width !== HP)) throw new KernelError('webgpu', `${g.label}: ssd_scan y / z of ${a.y.width} floats, dt of ${a.dt.width} (H ${H}, P ${P})`);
  const dtBias = B.vec(a.dtBias, H), A = B.vec(a.A, H), D = B.vec(a.D, H), h = g.state(a.state);
  const z = a.z ? a.z.off : -1;
  g.emit((b) => [ssdScanStep(g.K, b, a.y.off, h, x, a.dt.off, A, x + HP, x + HP + GN, D, z, {
    T, H, P, G: nG, N, xStride: row, bcStride: row, dtStride: H, dtBias, limit: a.limit,
  })]);
});
