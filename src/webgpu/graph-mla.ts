// WebGPU implementations of the ops of src/graph/ops-mla.ts over the recording's rows (dispatch
// helpers in ./dispatch/mla.ts). Latent attention and the DSA indexer handle one query per dispatch:
// a pass of several rows emits them once per row, row t seeing the positions up to step.pos + t.

import type { Tensor } from '../graph/graph';
import { HEAD_MATMUL, LATENT_ATTENTION, NORM_PREFIX, ROPE_SLICE } from '../graph/ops-mla';
import { KernelError } from '../kernels/runtime';
import { unsupported } from './builder';
import { ropeTables } from './dispatch/attention';
import { headMatmul, indexerScores, sparseAttention, topkSelect, type SparseAttnOptions } from './dispatch/mla';
import { GPU_OPS as G, type GpuGraph } from './graph';
import type { Dispatch } from './ops';

function sameRows(g: GpuGraph, op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.rows !== ts[0].rows) throw new KernelError('webgpu', `${g.label}: ${op} over tensors of ${t.rows} and ${ts[0].rows} rows`);
}

G.set(NORM_PREFIX, (g, a) => {
  const w = g.B.vec(a.w, a.dim);
  g.emit((b) => [g.K.rmsNorm(b, a.x.off, a.x.off, w, a.x.rows, a.dim, a.eps, { xStride: a.x.width, yStride: a.x.width })]);
});

// The kernel's head dimension is the distance between heads; it rotates the first rotaryDim floats of each.
G.set(ROPE_SLICE, (g, a) => {
  const r = a.rope, tab = ropeTables(g.B, r);
  g.emit((b) => [g.K.rope(b, a.x.off + a.off, a.x.rows, a.heads, a.stride, r.rotaryDim, r.style, tab.cos, tab.sin, a.x.width)]);
});

G.set(HEAD_MATMUL, (g, a) => {
  sameRows(g, 'per-head products', a.x, a.y);
  if (a.cols % 4) throw unsupported(`${g.label}: per-head products of ${a.cols} columns (not a multiple of 4)`);
  const w = g.B.weight(a.w, a.w.name ?? `${g.label}.head_matmul`);
  const o = { rows: a.rows, cols: a.cols, heads: a.heads, wOff: a.wOff, wHeadStride: a.wHeadStride, xStride: a.xStride, yStride: a.yStride, T: a.x.rows, xRow: a.x.width, yRow: a.y.width };
  g.emit((b) => [headMatmul(g.K, b, a.y.off, a.x.off, w, o)]);
});

// Dense: every cached position 0 … step.pos + t. Sparse: the indexer scores every cached position,
// the top-k are listed, and attention runs over those.
G.set(LATENT_ATTENTION, (g, a) => {
  sameRows(g, 'latent attention', a.q, a.y);
  const B = g.B, L = B.maxContext, sp = a.sparse, T = a.q.rows;
  const cache = g.state(a.cache);
  const sel = sp ? Math.min(sp.topk, L) : L;
  const scores = g.scratch('attention scores', a.nHeads * sel);
  let ix: { keys: number; scores: number; idx: number } | null = null;
  if (sp) {
    sameRows(g, 'indexer', a.q, sp.q, sp.w);
    ix = { keys: g.state(sp.keys), scores: g.tmp(L, 1).off, idx: g.tmp(sel, 1).off };
  }
  g.checkActivations(`attention scratch for ${L} positions`);
  const { nHeads, dim, vDim, scale } = a;
  // Keys are whole latent rows, values their first vDim values (in a quantized cache, its first blocks).
  const qc = a.cache.quant;
  const rows = qc ? { cache: qc.type, kStride: a.cache.perToken!, vStride: a.cache.perToken! } : { kStride: dim, vStride: dim };
  g.emit((b) => {
    const K = g.K, list: Dispatch[] = [];
    for (let t = 0; t < T; t++) {
      let idx: SparseAttnOptions['idx'];
      if (sp && ix) {
        list.push(indexerScores(K, b, ix.scores, sp.q.off + t * sp.q.width, sp.w.off + t * sp.w.width, ix.keys, { Hi: sp.nHeads, Di: sp.headDim, maxN: L, scale: sp.scale, row: t }));
        list.push(topkSelect(K, b, ix.idx, ix.scores, sp.topk, t));
        idx = { off: ix.idx, topk: sp.topk };
      }
      list.push(sparseAttention(K, b, a.y.off + t * a.y.width, a.q.off + t * a.q.width, cache, cache, {
        nHeads, nKv: 1, headDim: dim, vDim, scale, scores, maxN: sel, idx, row: t, ...rows,
      }));
    }
    return list;
  });
});
