// RecurrentGemma's recurrent block (models/recurrent_gemma.ts RecurrentBlock) for decode:
//   y = GeLU_tanh(linear_y x + b);  xb = conv1d(linear_x x + b) (+ conv bias; W−1 inputs in `st`)
//   RG-LRU (block-diagonal gates, state h in `st`, reset at position 0);  out = linear_out(h ⊙ y) + b

import { RecurrentBlock } from '../../models/recurrent_gemma';
import { registerMixer, type GpuBuilder } from '../builder';
import { EW } from '../ops';
import { convBias, RACT, ract, rglru } from './recurrent_kernels';

registerMixer(RecurrentBlock, (B: GpuBuilder, m: RecurrentBlock, x: number, out: number) => {
  const { hidden, W, H, convK } = m.cfg, bw = W / H, A = B.act;
  const y = A.take(W), xb = A.take(W), hs = A.take(W);
  const linY = B.weight(m.linY, `${m.prefix}.linear_y`), linX = B.weight(m.linX, `${m.prefix}.linear_x`), linOut = B.weight(m.linOut, `${m.prefix}.linear_out`);
  const bY = B.vec(m.bY, W), bX = B.vec(m.bX, W), bOut = B.vec(m.bOut, hidden);
  const convW = B.vec(m.convW, W * convK), convB = B.vec(m.convB, W);
  // The gate blocks lie contiguously in the arena, [H, bw, bw] in Linear layout.
  const gates = {
    mi: B.vec(m.gateI[0].ptr, H * bw * bw), ma: B.vec(m.gateA[0].ptr, H * bw * bw),
    bi: B.vec(m.bI, W), ba: B.vec(m.bA, W), logA: B.constant(m.logABase),
  };
  const convSt = B.state(W * (convK - 1), 'fixed', m.convState), hSt = B.state(W, 'fixed', m.hState);
  B.emit((b) => {
    const K = B.K;
    return [
      K.matmul(b, y, x, linY, 1),
      K.elementwise(b, EW.addConst, y, y, bY, W),
      ract(K, b, RACT.geluTanh, y, W),
      K.matmul(b, xb, x, linX, 1),
      K.elementwise(b, EW.addConst, xb, xb, bX, W),
      convBias(K, b, xb, convW, convB, convSt, 1, W, convK),
      rglru(K, b, hs, hSt, xb, y, gates, 1, W, bw),
      K.matmul(b, out, hs, linOut, 1),
      K.elementwise(b, EW.addConst, out, out, bOut, hidden),
    ];
  });
});
