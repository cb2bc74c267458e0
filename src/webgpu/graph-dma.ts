// WebGPU implementations of the ops of src/graph/ops-dma.ts: dynamic mask attention
// (kernels/dma.wgsl.ts) of the recording's query rows over the session's f32 caches, and the
// per-column product of Doge's residual weights (the elementwise kernel's mulConst).

import { sameShape } from '../graph/graph';
import { DMA_ATTENTION, MUL_ROW } from '../graph/ops-dma';
import { KernelError } from '../kernels/runtime';
import { GPU_OPS as G } from './graph';
import { DMA_MAX_HEAD_DIM, DMA_PARAMS, dmaWgsl } from './kernels/dma.wgsl';
import { EW, type Dispatch } from './ops';

/** Floats of score scratch one dispatch may use (two rows of maxContext per query row and head). */
const SCORE_FLOATS = 1 << 22;

G.set(DMA_ATTENTION, (g, a) => {
  const T = a.q.rows;
  if (a.y.rows !== T) throw new KernelError('webgpu', `${g.label}: dma_attention over ${T} query rows into ${a.y.rows}`);
  if (a.headDim > DMA_MAX_HEAD_DIM) throw new KernelError('webgpu', `${g.label}: dma_attention headDim ${a.headDim} > ${DMA_MAX_HEAD_DIM} (use backend 'wasm')`);
  if (a.nHeads % a.nKv) throw new KernelError('webgpu', `${g.label}: nHeads ${a.nHeads} is not a multiple of nKv ${a.nKv}`);
  for (const r of [a.k, a.v, a.dt]) {
    if (r.kind !== 'kv' || r.quant) throw new KernelError('webgpu', `${g.label}: ${r.name} must be a linear f32 cache`);
  }
  const L = g.B.maxContext, kc = g.state(a.k), vc = g.state(a.v), dc = g.state(a.dt);
  const per = Math.max(1, Math.min(T, Math.floor(SCORE_FLOATS / (2 * a.nHeads * L))));
  const scores = g.scratch('dma attention scores', per * a.nHeads * 2 * L);
  g.checkActivations(`dma attention scratch for ${L} positions`);
  const A = g.B.vec(a.A, a.nKv);
  g.emit((b) => {
    const list: Dispatch[] = [];
    for (let r0 = 0; r0 < T; r0 += per) {
      list.push(g.K.dispatch('dma_attention', dmaWgsl, DMA_PARAMS, {
        nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim,
        qOff: a.q.off + r0 * a.q.width, oOff: a.y.off + r0 * a.y.width, kOff: kc, vOff: vc, dtOff: dc, aOff: A,
        sOff: scores, maxN: L, scale: a.scale, window: a.window, keep: a.keep,
        row0: r0, qRowStride: a.q.width, oRowStride: a.y.width,
      }, b, [a.nHeads, Math.min(per, T - r0), 1]));
    }
    return list;
  });
});

G.set(MUL_ROW, (g, a) => {
  sameShape('mul_row', a.y, a.x);
  const w = g.B.vec(a.w, a.x.width);
  g.emit((b) => [g.K.elementwise(b, EW.mulConst, a.y.off, a.x.off, w, a.x.rows * a.x.width, { period: a.x.width })]);
});
