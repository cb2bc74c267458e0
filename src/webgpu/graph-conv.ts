// WebGPU implementations of the ops of src/graph/ops-conv.ts: the kernel runs the recording's rows in order.

import { LIGHTNING } from '../graph/ops-conv';
import { KernelError } from '../kernels/runtime';
import { lightning } from './dispatch/recurrent';
import { GPU_OPS as G } from './graph';


// q, k, v are read in place from the packed rows (per head [q | k | v]).
G.set(LIGHTNING, (g, a) => {
  const { y, qkv, H, d } = a, n = H * d;
  if (qkv.rows !== y.rows) throw new KernelError('lightning_attention', `${g.label}: ${y.rows} output rows for ${qkv.rows} input rows`);
  if (qkv.width !== 3 * n || y.width !== n) throw new KernelError('lightning_attention', `${g.label}: ${y.width} from ${qkv.width} (H ${H}, d ${d})`);
  const slopes = g.B.vec(a.slopes, H);
  const S = g.state(a.state);
  const q = qkv.off;
  g.emit((b) => [lightning(g.K, b, y.off, S, q, q + d, q + 2 * d, slopes, { T: y.rows, H, d, headStride: 3 * d, tokStride: 3 * n })]);
});
