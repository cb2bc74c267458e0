// WASM implementations of the ops of ./ops-mla.ts, on the kernels of src/kernels.

import { attendSelected, attention, dsaIndexerScores, topkSelect } from '../kernels/attention';
import { matmul } from '../kernels/matmul';
import { rmsNorm } from '../kernels/norm';
import { rope } from '../kernels/rope';
import { KernelError } from '../kernels/runtime';
import { HEAD_MATMUL, LATENT_ATTENTION, NORM_PREFIX, ROPE_SLICE } from './ops-mla';
import { WASM_OPS as W } from './wasm';

W.set(NORM_PREFIX, (g, a) => {
  if (g.dry) return;
  if (a.dim > a.x.width) throw new KernelError('norm', `${g.label}: ${a.dim} floats of rows of ${a.x.width}`);
  rmsNorm(g.k, a.x.off, a.x.off, a.w, a.x.rows, a.dim, a.eps, { stride: a.x.width });
});

W.set(ROPE_SLICE, (g, a) => {
  const r = a.rope;
  const inv = g.constant(r, r.invFreq);
  if (g.dry) return;
  const d = r.rotaryDim;
  if (a.off + (a.heads - 1) * a.stride + d > a.x.width) throw new KernelError('rope', `${g.label}: ${a.heads} slices of ${d} from ${a.off} (stride ${a.stride}) in rows of ${a.x.width}`);
  if (a.x.rows !== g.T) throw new KernelError('rope', `${g.label}: ${a.x.rows} rows for ${g.T} positions`);
  rope(g.k, a.x.off + a.off * 4, a.x.rows, a.heads, d, g.positions, inv, d, r.style, r.attentionFactor, a.stride, a.x.width);
});

// Head by head: gather the head's inputs of every row, one product, scatter the outputs.
W.set(HEAD_MATMUL, (g, a) => {
  const T = a.x.rows, { rows, cols } = a;
  const gx = g.tmp(cols, T), gy = g.tmp(rows, T);
  if (g.dry) return;
  const xw = a.x.width, yw = a.y.width;
  if (a.w.dtype !== 'f32') throw new KernelError('mla', `${g.label}: per-head products of a ${a.w.dtype} matrix (f32 only)`);
  if (a.y.rows !== T || (a.heads - 1) * a.xStride + cols > xw || (a.heads - 1) * a.yStride + rows > yw ||
    a.wOff + (a.heads - 1) * a.wHeadStride + rows * cols > a.w.rows * a.w.cols) {
    throw new KernelError('mla', `${g.label}: ${a.heads} heads of ${rows}×${cols} from ${a.x.rows}×${xw} to ${a.y.rows}×${yw}`);
  }
  for (let h = 0; h < a.heads; h++) {
    for (let t = 0; t < T; t++) g.move(gx.off + t * cols * 4, a.x.off + (t * xw + h * a.xStride) * 4, cols);
    const w = { ptr: a.w.ptr + (a.wOff + h * a.wHeadStride) * 4, dtype: 'f32' as const, rows, cols };
    matmul(g.k, gy.off, gx.off, w, T, g.matmulOpts);
    for (let t = 0; t < T; t++) g.move(a.y.off + (t * yw + h * a.yStride) * 4, gy.off + t * rows * 4, rows);
  }
});

// Queries at positions p with p + 1 ≤ topk see every causal key: one dense call for those rows;
// each later row scores the indexer keys 0 … p, keeps its top-k and attends to those slots only.
W.set(LATENT_ATTENTION, (g, a) => {
  const sp = a.sparse;
  const idx = sp ? g.tmp(sp.topk, 1) : null;
  // Indexer scores of one query over the whole context.
  const scores = sp ? g.tmp(g.maxContext, 1) : null;
  if (g.dry) return;
  const k = g.k, T = g.T, pos0 = g.pos0, H = a.nHeads, Lw = a.dim, R = a.vDim;
  if (a.q.rows !== T || a.y.rows !== T || a.q.width !== H * Lw || a.y.width !== H * R) {
    throw new KernelError('mla', `${g.label}: latent attention of ${a.q.rows}×${a.q.width} queries into ${a.y.rows}×${a.y.width} (${H} heads of ${Lw} → ${R})`);
  }
  const lat = g.state(a.cache);
  // Keys are whole latent rows and values their first R values: in a quantized cache, the first blocks.
  const qc = a.cache.quant;
  const rows = qc ? { cache: qc.type, kStride: a.cache.perToken! * 4, vStride: a.cache.perToken! * 4 } : { kStride: Lw, vStride: Lw };
  const dense = (n: number) => attention(k, a.y.off, a.q.off, lat, lat, {
    T: n, qPos0: pos0, nHeads: H, nKv: 1, headDim: Lw, vDim: R, scale: a.scale, ...rows,
  });
  if (!sp) {
    dense(T);
    return;
  }
  const { nHeads: Hi, headDim: Di, topk } = sp;
  const nDense = Math.max(0, Math.min(T, topk - pos0));
  if (nDense > 0) {
    dense(nDense);
    if (nDense === T) {
      if (sp.picks) sp.picks.lastSelected = Int32Array.from({ length: pos0 + T }, (_, i) => i);
      return;
    }
  }
  const kI = g.state(sp.keys);
  for (let t = nDense; t < T; t++) {
    const n = pos0 + t + 1;
    dsaIndexerScores(k, scores!.off, sp.q.off + t * Hi * Di * 4, sp.w.off + t * Hi * 4, kI, n, Hi, Di, { scale: sp.scale });
    const m = topkSelect(k, idx!.off, scores!.off, n, topk);
    attendSelected(k, a.y.off + t * H * R * 4, a.q.off + t * H * Lw * 4, lat, lat, idx!.off, m, {
      nHeads: H, nKv: 1, headDim: Lw, vDim: R, scale: a.scale, ...rows,
    });
    if (t === T - 1 && sp.picks) sp.picks.lastSelected = k.arena.i32(idx!.off, m).slice();
  }
});
