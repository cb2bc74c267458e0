// WASM implementation of the op of ./ops-bitnet.ts.

import { KernelError } from '../kernels/runtime';
import { ternaryMatmul, ternaryScratchBytes } from '../kernels/ternary';
import { BIT_LINEAR } from './ops-bitnet';
import { WASM_OPS as W } from './wasm';

// The int8 rows of the quantized input live in a temporary of the op.
W.set(BIT_LINEAR, (g, a) => {
  const { x, y, w } = a;
  const scratch = g.tmp(Math.ceil(ternaryScratchBytes(x.rows, w.cols) / 4), 1);
  if (g.dry) return;
  if (x.rows !== y.rows || x.width !== w.cols || y.width !== w.rows) {
    throw new KernelError('bit_linear', `${g.label}: ${y.rows}×${y.width} = ${x.rows}×${x.width} · (${w.rows}×${w.cols})ᵀ`);
  }
  ternaryMatmul(g.k, y.off, x.off, w, x.rows, scratch.off);
});
