// WebGPU implementations of the ops of src/graph/ops-mla.ts: each records the dispatches of one
// position (dispatch helpers in ./dispatch/mla.ts).

import type { Tensor } from '../graph/graph';
import { HEAD_MATMUL, LATENT_ATTENTION, NORM_PREFIX, ROPE_SLICE } from '../graph/ops-mla';
import { KernelError } from '../kernels/runtime';
import { unsupported } from './builder';
import { ropeTables, scoresScratch } from './dispatch/attention';
import { headMatmul, indexerScores, sparseAttention, topkSelect, type SparseAttnOptions } from './dispatch/mla';
import { GPU_OPS as G, type GpuGraph } from './graph';
import type { Dispatch } from './ops';

function oneRow(g: GpuGraph, op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.rows !== 1) throw new KernelError('webgpu', `${g.label}: ${op} over ${t.rows} rows (the WebGPU recording is of one position)`);
}

G.set(NORM_PREFIX, (g, a) => {
  oneRow(g, 'norm', a.x);
  const w = g.B.vec(a.w, a.dim);
  g.emit((b) => [g.K.rmsNorm(b, a.x.off, a.x.off, w, 1, a.dim, a.eps)]);
});

// The kernel's head dimension is the distance between heads; it rotates the first rotaryDim floats of each.
G.set(ROPE_SLICE, (g, a) => {
  oneRow(g, 'rope', a.x);
  const r = a.rope, tab = ropeTables(g.B, r);
  g.emit((b) => [g.K.rope(b, a.x.off + a.off, 1, a.heads, a.stride, r.rotaryDim, r.style, tab.cos, tab.sin, a.x.width)]);
});

G.set(HEAD_MATMUL, (g, a) => {
  oneRow(g, 'per-head products', a.x, a.y);
  if (a.cols % 4) throw unsupported(`${g.label}: per-head products of ${a.cols} columns (not a multiple of 4)`);
  const w = g.B.weight(a.w, a.w.name ?? `${g.label}.head_matmul`);
  const o = { rows: a.rows, cols: a.cols, heads: a.heads, wOff: a.wOff, wHeadStride: a.wHeadStride, xStride: a.xStride, yStride: a.yStride };
  g.emit((b) => [headMatmul(g.K, b, a.y.off, a.x.off, w, o)]);
});

// Dense: every cached position 0 … step.pos. Sparse: the indexer scores every cached position, the
// top-k are listed, and attention runs over those.
G.set(LATENT_ATTENTION, (g, a) => {
  oneRow(g, 'latent attention', a.q, a.y);
  const B = g.B, L = B.maxContext, sp = a.sparse;
  const cache = g.state(a.cache);
  const sel = sp ? Math.min(sp.topk, L) : L;
  const scores = scoresScratch(B, a.nHeads * sel);
  let ix: { keys: number; scores: number; idx: number } | null = null;
  if (sp) {
    oneRow(g, 'indexer', sp.q, sp.w);
    ix = { keys: g.state(sp.keys), scores: g.tmp(L).off, idx: g.tmp(sel).off };
  }
  const limit = g.K.gpu.limits.maxStorageBufferBindingSize;
  if (B.act.top * 4 > limit) throw new KernelError('webgpu', `${g.label}: attention scratch for ${L} positions exceeds the device's storage binding limit ${limit} (use a shorter maxContext)`);
  const { nHeads, dim, vDim, scale } = a;
  g.emit((b) => {
    const K = g.K, list: Dispatch[] = [];
    let idx: SparseAttnOptions['idx'];
    if (sp && ix) {
      list.push(indexerScores(K, b, ix.scores, sp.q.off, sp.w.off, ix.keys, { Hi: sp.nHeads, Di: sp.headDim, maxN: L, scale: sp.scale }));
      list.push(topkSelect(K, b, ix.idx, ix.scores, sp.topk));
      idx = { off: ix.idx, topk: sp.topk };
    }
    list.push(sparseAttention(K, b, a.y.off, a.q.off, cache, cache, {
      nHeads, nKv: 1, headDim: dim, vDim, scale, kStride: dim, vStride: dim, scores, maxN: sel, idx,
    }));
    return list;
  });
});
