// Qwen3-Next's Gated DeltaNet mixer for decode: fused in-projections, causal conv step (state in
// `st`), gates, one gated-delta-rule step per value head (state S in `st`), gated RMSNorm, output
// projection.

import { GatedDeltaNet } from '../../models/qwen3_next';
import { registerMixer, type GpuBuilder } from '../builder';

registerMixer(GatedDeltaNet, (B: GpuBuilder, m: GatedDeltaNet, x: number, out: number) => {
  const { Hk, Hv, dk, dv, convK, eps } = m.cfg;
  const convDim = m.convDim;
  const A = B.act;
  const mixed = A.take(convDim), z = A.take(Hv * dv), ba = A.take(2 * Hv), g = A.take(Hv), beta = A.take(Hv), ob = A.take(Hv * dv);
  const qkvz = B.weight(m.qkvz, `${m.prefix}.in_proj_qkvz`), baW = B.weight(m.ba, `${m.prefix}.in_proj_ba`), outW = B.weight(m.out, `${m.prefix}.out_proj`);
  const convW = B.vec(m.convW, convDim * convK);
  const aLog = B.constant(m.aLog), dtBias = B.constant(m.dtBias);
  const normW = B.vec(m.normW, dv);
  const convSt = B.state(convDim * (convK - 1), 'fixed', m.convState), S = B.state(Hv * dk * dv, 'fixed', m.deltaState);
  B.emit((b) => [
    B.K.matmul(b, mixed, x, qkvz, 1, { rows: convDim }),
    B.K.matmul(b, z, x, qkvz, 1, { rows: Hv * dv, rowOff: convDim }),
    B.K.matmul(b, ba, x, baW, 1),
    B.K.conv1d(b, mixed, convW, convSt, 1, convDim, convK, 'silu'),
    B.K.deltaGates(b, g, beta, ba, aLog, dtBias, Hv),
    B.K.deltaStep(b, ob, S, mixed, mixed + Hk * dk, mixed + 2 * Hk * dk, g, beta, { Hv, Hk, dk, dv, scale: 1 / Math.sqrt(dk), normQK: true }),
    B.K.rmsNorm(b, ob, ob, normW, Hv, dv, eps, { gateZ: z }),
    B.K.matmul(b, out, ob, outW, 1),
  ]);
});
