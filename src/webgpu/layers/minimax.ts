// MiniMax-01 (models/minimax.ts) for decode: the lightning-attention mixer and the block wiring
// whose residual stream is the normed input:
//   x ← norm₁(x);  x ← α_attn·x + β_attn·mixer(x);  x ← norm₂(x);  x ← α_mlp·x + β_mlp·MoE(x)
// Lightning attention: [q k v] = SiLU(qkv_proj x) (per head [q | k | v]); per head
//   S ← exp(−s_h) S + k vᵀ, o = Sᵀ q (S in `st`); out = out_proj(sigmoid(output_gate x) ⊙ RMSNorm(o)).

import { LightningAttention, MiniMaxBlock } from '../../models/minimax';
import { registerBlock, registerMixer, type GpuBuilder } from '../builder';
import { EW } from '../ops';
import { lightning } from './recurrent_kernels';

registerMixer(LightningAttention, (B: GpuBuilder, m: LightningAttention, x: number, out: number) => {
  const { H, d } = m.cfg, n = H * d, A = B.act;
  const qkv = A.take(3 * n), o = A.take(n), gate = A.take(n);
  const qkvW = B.weight(m.qkv, `${m.prefix}.qkv_proj`), gateW = B.weight(m.gate, `${m.prefix}.output_gate`), outW = B.weight(m.out, `${m.prefix}.out_proj`);
  const normW = B.vec(m.normW, n), slopes = B.vec(m.slopes, H);
  const S = B.state(H * d * d, 'fixed', m.kvState);
  B.emit((b) => {
    const K = B.K;
    return [
      K.matmul(b, qkv, x, qkvW, 1),
      K.elementwise(b, EW.silu, qkv, qkv, 0, 3 * n),
      lightning(K, b, o, S, qkv, qkv + d, qkv + 2 * d, slopes, { T: 1, H, d, headStride: 3 * d, tokStride: 3 * n }),
      K.rmsNorm(b, o, o, normW, 1, n, 1e-6),
      K.matmul(b, gate, x, gateW, 1),
      K.elementwise(b, EW.mulSigmoid, o, o, gate, n),
      K.matmul(b, out, o, outW, 1),
    ];
  });
});

registerBlock(MiniMaxBlock, (B: GpuBuilder, blk: MiniMaxBlock, x: number, where: string) => {
  const D = blk.hidden, o = B.act.take(D);
  const mix = (f: { alpha: number; beta: number }) => B.emit((b) => [
    B.K.elementwise(b, EW.scale, x, x, 0, D, { s: f.alpha }),
    B.K.elementwise(b, EW.scale, o, o, 0, D, { s: f.beta }),
    B.K.elementwise(b, EW.add, x, x, o, D),
  ]);
  B.norm(blk.norm1, x, x, D);
  B.mixer(blk.mixer, x, o, where);
  mix(blk.attn);
  B.norm(blk.norm2, x, x, D);
  B.ffn(blk.ffn, x, o, where);
  mix(blk.mlp);
});
