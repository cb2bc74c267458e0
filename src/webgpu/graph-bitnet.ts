// WebGPU implementation of the op of src/graph/ops-bitnet.ts: the input rows are quantized into a
// temporary, then multiplied with the packed ternary weight (dispatch/ternary.ts), which goes up to
// the device once, in its arena layout (2 bits a weight).

import { BIT_LINEAR, type TernaryWeight } from '../graph/ops-bitnet';
import { KernelError } from '../kernels/runtime';
import { ternaryRowBytes } from '../kernels/ternary';
import type { GpuBuilder } from './builder';
import { ternaryProduct, ternaryScratchFloats } from './dispatch/ternary';
import { GPU_OPS as G } from './graph';

/** Each builder's packed weights on the device, by arena pointer. */
const uploaded = new WeakMap<GpuBuilder, Map<number, GPUBuffer>>();

function weightBuffer(B: GpuBuilder, w: TernaryWeight, label: string): GPUBuffer {
  let m = uploaded.get(B);
  if (!m) uploaded.set(B, (m = new Map()));
  let buf = m.get(w.ptr);
  if (!buf) {
    const bytes = B.model.k.arena.u8(w.ptr, w.rows * ternaryRowBytes(w.cols));
    buf = B.K.upload(bytes, undefined, label);
    B.weightBytes += bytes.byteLength;
    m.set(w.ptr, buf);
  }
  return buf;
}

G.set(BIT_LINEAR, (g, a) => {
  const { x, y, w } = a;
  if (x.rows !== y.rows || x.width !== w.cols || y.width !== w.rows) {
    throw new KernelError('bit_linear', `${g.label}: ${y.rows}×${y.width} = ${x.rows}×${x.width} · (${w.rows}×${w.cols})ᵀ`);
  }
  const buf = weightBuffer(g.B, w, w.name ?? `${g.label}.bit_linear`);
  const scratch = g.tmp(ternaryScratchFloats(x.rows, w.cols), 1).off;
  g.emit((b) => ternaryProduct(g.K, b, y.off, x.off, buf, {
    rows: x.rows, wRows: w.rows, cols: w.cols, scale: w.scale, scratch, xStride: x.width, yStride: y.width,
  }));
});
