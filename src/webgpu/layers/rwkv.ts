// RWKV-4 blocks (models/rwkv.ts RwkvBlock) for decode: LayerNorms, token shifts against the previous
// token's normed input (kept in `st`), the WKV recurrence (num, den, max per channel in `st`), the
// squared-ReLU channel mix, and the eval-mode rescaling (branch outputs × 2^−⌊i/R⌋, the residual
// stream halved after every R-th block).

import { RwkvBlock } from '../../models/rwkv';
import { registerBlock, type GpuBuilder } from '../builder';
import { EW, type Dispatch } from '../ops';
import { RACT, ract, tokenShift, wkv4 } from './recurrent_kernels';

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

registerBlock(RwkvBlock, (B: GpuBuilder, blk: RwkvBlock, x: number) => {
  const { hidden: D, A: Ah, I, branchScale, halveAfter } = blk.cfg;
  const A = B.act, p = blk.prefix;
  const h = A.take(D), mixed = A.take(3 * D), kb = A.take(Math.max(Ah, I)), vb = A.take(Ah), rb = A.take(Math.max(Ah, D));
  const o = A.take(D), wkv = A.take(Ah);
  const att = blk.att, ffn = blk.ffn;
  const attShift = B.state(D, 'fixed', blk.attShiftState), ffnShift = B.state(D, 'fixed', blk.ffnShiftState), wkvSt = B.state(3 * Ah, 'fixed', blk.wkvState);
  const attMix = B.constant(concat([att.mk, att.mv, att.mr])), ffnMix = B.constant(concat([ffn.mk, ffn.mr]));
  const aK = B.weight(att.k, `${p}.attention.key`), aV = B.weight(att.v, `${p}.attention.value`), aR = B.weight(att.r, `${p}.attention.receptance`);
  const aO = B.weight(att.o, `${p}.attention.output`);
  const fK = B.weight(ffn.k, `${p}.feed_forward.key`), fR = B.weight(ffn.r, `${p}.feed_forward.receptance`), fV = B.weight(ffn.v, `${p}.feed_forward.value`);
  const decay = B.vec(att.timeDecay, Ah), first = B.vec(att.timeFirst, Ah);
  const residual = (K: typeof B.K, b: Parameters<Parameters<typeof B.emit>[0]>[0], list: Dispatch[]) => {
    if (branchScale !== 1) list.push(K.elementwise(b, EW.scale, o, o, 0, D, { s: branchScale }));
    list.push(K.elementwise(b, EW.add, x, x, o, D));
  };

  if (blk.preLn) B.norm(blk.preLn, x, x, D);
  B.norm(blk.ln1, h, x, D);
  B.emit((b) => {
    const K = B.K;
    const list = [
      tokenShift(K, b, mixed, h, attShift, attMix, 3, 1, D),
      K.matmul(b, kb, mixed, aK, 1), K.matmul(b, vb, mixed + D, aV, 1), K.matmul(b, rb, mixed + 2 * D, aR, 1),
      K.elementwise(b, EW.sigmoid, rb, rb, 0, Ah),
      wkv4(K, b, wkv, wkvSt, kb, vb, decay, first, 1, Ah),
      K.elementwise(b, EW.mul, wkv, wkv, rb, Ah),
      K.matmul(b, o, wkv, aO, 1),
    ];
    residual(K, b, list);
    return list;
  });
  B.norm(blk.ln2, h, x, D);
  B.emit((b) => {
    const K = B.K;
    const list = [
      tokenShift(K, b, mixed, h, ffnShift, ffnMix, 2, 1, D),
      K.matmul(b, kb, mixed, fK, 1),
      ract(K, b, RACT.relu2, kb, I),
      K.matmul(b, o, kb, fV, 1),
      K.matmul(b, rb, mixed + D, fR, 1),
      K.elementwise(b, EW.sigmoid, rb, rb, 0, D),
      K.elementwise(b, EW.mul, o, o, rb, D),
    ];
    residual(K, b, list);
    if (halveAfter) list.push(K.elementwise(b, EW.scale, x, x, 0, D, { s: 0.5 }));
    return list;
  });
});
