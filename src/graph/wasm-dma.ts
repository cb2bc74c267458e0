// WASM implementation of the dynamic mask attention op (./ops-dma.ts) on kernels/dma.ts: the pass's
// queries over the session's linear f32 caches (positions 0 … pos0 + T − 1).

import { dmaAttention } from '../kernels/dma';
import { KernelError } from '../kernels/runtime';
import { sameShape } from './graph';
import { DMA_ATTENTION, MUL_ROW } from './ops-dma';
import { WASM_OPS as W } from './wasm';

W.set(DMA_ATTENTION, (g, a) => {
  if (g.dry) return;
  for (const r of [a.k, a.v, a.dt]) {
    if (r.kind !== 'kv' || r.quant) throw new KernelError('dma_attention', `${g.label}: ${r.name} must be a linear f32 cache`);
  }
  if (a.q.rows !== g.T || a.y.rows !== g.T) throw new KernelError('dma_attention', `${g.label}: ${a.q.rows} query rows for ${g.T} tokens`);
  dmaAttention(g.k, a.y.off, a.q.off, g.state(a.k), g.state(a.v), g.state(a.dt), a.A, {
    T: g.T, qPos0: g.pos0, nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, scale: a.scale, window: a.window, keep: a.keep,
  });
});

W.set(MUL_ROW, (g, a) => {
  if (g.dry) return;
  sameShape('mul_row', a.y, a.x);
  const { rows, width } = a.x;
  const w = g.k.arena.f32(a.w, width), x = g.f32(a.x), y = g.f32(a.y);
  for (let t = 0; t < rows; t++) for (let i = 0; i < width; i++) y[t * width + i] = x[t * width + i] * w[i];
});
