// WebGPU implementations of the ops of src/graph/ops-conv.ts, each recording one position.

import { LIGHTNING } from '../graph/ops-conv';
import { KernelError } from '../kernels/runtime';
import { lightning } from './dispatch/recurrent';
import { GPU_OPS as G } from './graph';


// q, k, v are read in place from the packed rows (per head [q | k | v]).
G.set(LIGHTNING, (g, a) => {
  const { y, qkv, H, d } = a, n = H * d;
  if (qkv.rows !== 1 || y.rows !== 1) throw new KernelError('webgpu', `${g.label}: lightning_attention over ${qkv.rows} rows (the WebGPU recording is of one position)`);
  if (qkv.width !== 3 * n || y.width !== n) throw new KernelError('lightning_attention', `${g.label}: ${y.width} from ${qkv.width} (H ${H}, d ${d})`);
  const slopes = g.B.vec(a.slopes, H);
  const S = g.state(a.state);
  const q = qkv.off;
  g.emit((b) => [lightning(g.K, b, y.off, S, q, q + d, q + 2 * d, slopes, { T: 1, H, d, headStride: 3 * d, tokStride: 3 * n })]);
});
