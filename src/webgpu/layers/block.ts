// Pre-norm residual blocks (decoder.ts PreNormBlock): x += [postNorm](mixer(norm(x))), then the
// same with the FFN; Granite's residual_multiplier scales each branch.

import { PreNormBlock } from '../../models/decoder';
import { registerBlock, type GpuBuilder } from '../builder';
import { EW } from '../ops';

function branch(B: GpuBuilder, x: number, o: number, D: number, mult: number | undefined): void {
  if (mult !== undefined) B.emit((b) => [B.K.elementwise(b, EW.scale, o, o, 0, D, { s: mult })]);
  B.add(x, o, D);
}

registerBlock(PreNormBlock, (B, blk: PreNormBlock, x, where) => {
  const s = blk.s, D = s.hidden;
  const h = B.act.take(D), o = B.act.take(D);
  B.norm(s.preMixer, h, x, D);
  B.mixer(s.mixer, h, o, where);
  if (s.postMixer) B.norm(s.postMixer, o, o, D);
  branch(B, x, o, D, s.residualMultiplier);
  if (!s.ffn) return;
  B.norm(s.preFfn!, h, x, D);
  B.ffn(s.ffn, h, o, where);
  if (s.postFfn) B.norm(s.postFfn, o, o, D);
  branch(B, x, o, D, s.residualMultiplier);
});
