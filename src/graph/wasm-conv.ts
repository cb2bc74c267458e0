// WASM implementations of the ops of ./ops-conv.ts.

import { lightningAttention, linearAttentionScratchBytes } from '../kernels/linear_attention';
import { KernelError } from '../kernels/runtime';
import { LIGHTNING } from './ops-conv';
import { WASM_OPS as W } from './wasm';


// The packed per-head [q | k | v] rows are split into q, k, v [T, H, d] for the scan kernel, which
// runs the chunked form for chunks of at least its chunk length and the step form otherwise.
W.set(LIGHTNING, (g, a) => {
  const { y, qkv, H, d } = a;
  const T = qkv.rows, n = H * d;
  if (qkv.width !== 3 * n || y.width !== n || y.rows !== T) {
    throw new KernelError('lightning_attention', `${g.label}: ${y.rows}×${y.width} from ${T}×${qkv.width} (H ${H}, d ${d})`);
  }
  const q = g.tmp(n, T), k = g.tmp(n, T), v = g.tmp(n, T);
  const scan = g.tmp(Math.ceil(linearAttentionScratchBytes(g.k, { dk: d, dv: d, decay: 'scalar', delta: false }) / 4), 1);
  if (g.dry) return;
  for (let r = 0; r < T * H; r++) {
    const o3 = qkv.off + r * 3 * d * 4, o = r * d * 4;
    g.move(q.off + o, o3, d);
    g.move(k.off + o, o3 + d * 4, d);
    g.move(v.off + o, o3 + 2 * d * 4, d);
  }
  lightningAttention(g.k, y.off, g.state(a.state), q.off, k.off, v.off, a.slopes, {
    T, H, d, blockSize: a.blockSize, mode: 'auto', scratch: scan.off,
  });
});
