// WASM implementations of the block-diffusion ops (ops-diffusion.ts).

import { KernelError } from '../kernels/runtime';
import { HOST_ROWS } from './ops-diffusion';
import { WASM_OPS as W } from './wasm';

W.set(HOST_ROWS, (g, a) => {
  if (g.dry) return;
  const n = a.y.rows * a.y.width;
  if (a.data.length !== n) throw new KernelError('host_rows', `${g.label}: ${a.data.length} floats for a ${a.y.rows}×${a.y.width} tensor`);
  g.f32(a.y).set(a.data);
});
