// LFM2's gated short convolution (models/lfm2.ts ShortConv) for decode:
//   [b | c | x] = in_proj h (+ bias);  y = c ⊙ conv1d(b ⊙ x) (+ conv bias);  out = out_proj y (+ bias)
// with the conv's W−1 previous inputs per channel in `st`.

import { ShortConv } from '../../models/lfm2';
import { registerMixer, type GpuBuilder } from '../builder';
import { EW, type Dispatch } from '../ops';
import { convBias } from './recurrent_kernels';

registerMixer(ShortConv, (B: GpuBuilder, m: ShortConv, x: number, out: number) => {
  const D = m.hidden, L = m.L;
  const bcx = B.act.take(3 * D);
  const inW = B.weight(m.inProj, `${m.prefix}.in_proj`), outW = B.weight(m.outProj, `${m.prefix}.out_proj`);
  const inB = m.inBias ? B.vec(m.inBias, 3 * D) : -1;
  const convW = B.vec(m.convW, D * L), convB = m.convB ? B.vec(m.convB, D) : -1;
  const outB = m.outBias ? B.vec(m.outBias, D) : -1;
  const st = B.state(D * (L - 1), 'fixed', m.convState);
  const bb = bcx, cc = bcx + D, xx = bcx + 2 * D;
  B.emit((b) => {
    const K = B.K, list: Dispatch[] = [K.matmul(b, bcx, x, inW, 1)];
    if (inB >= 0) list.push(K.elementwise(b, EW.addConst, bcx, bcx, inB, 3 * D));
    list.push(
      K.elementwise(b, EW.mul, bb, bb, xx, D),
      convBias(K, b, bb, convW, convB, st, 1, D, L),
      K.elementwise(b, EW.mul, cc, cc, bb, D),
      K.matmul(b, out, cc, outW, 1),
    );
    if (outB >= 0) list.push(K.elementwise(b, EW.addConst, out, out, outB, D));
    return list;
  });
});
