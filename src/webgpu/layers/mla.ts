// DeepSeek attention for decode: Multi-head Latent Attention (models/deepseek_v3.ts MlaAttention)
// with the compressed latent cache [c | RoPE(k_rope)] per position in `st`, and DeepSeek-V3.2's
// sparse attention (models/deepseek_v32.ts DsaAttention), whose lightning indexer scores every
// cached position, keeps the index_topk best and runs MLA over those only.
//
// Per token: q = q_b(RMSNorm(q_a x)) (or q_proj x); latent = kv_a x, RMSNorm over c, RoPE on k_rope,
// appended to the cache; q_rope rotated; absorbed queries [W_UK_hᵀ q_nope_h | q_rope_h]; MQA over the
// latent cache (keys the whole latent row, values its first kv_lora_rank floats); o_h = W_UV_h olat_h;
// out = o_proj(o).

import { MlaAttention, LORA_NORM_EPS } from '../../models/deepseek_v3';
import { DsaAttention, INDEXER_NORM_EPS } from '../../models/deepseek_v32';
import type { Weight } from '../../kernels/types';
import { KernelError } from '../../kernels/runtime';
import { registerMixer, unsupported, type GpuBuilder } from '../builder';
import { EW, type Dispatch, type GpuBufs, type GpuKernels, type GpuWeight } from '../ops';
import { HEAD_MM_PARAMS, headMatmulWgsl } from '../kernels/mla.wgsl';
import { INDEXER_PARAMS, INDEXER_WG, indexerWgsl, SPARSE_ATTN_PARAMS, sparseAttentionWgsl, TOPK_PARAMS, topkWgsl } from '../kernels/sparse_attention.wgsl';
import { ropeTables } from './attention';

// ---- kernel builders (offsets in floats of `a` / `st`) --------------------------------------------

/**
 * y[z·yStride + r] = Σ_i W[wOff + z·wHeadStride + r·cols + i] · x[z·xStride + i] for r < rows, z < heads;
 * w an f32 weight buffer, wOff / wHeadStride in words.
 */
export function headMatmul(K: GpuKernels, b: GpuBufs, y: number, x: number, w: GpuWeight, o: { rows: number; cols: number; heads: number; wOff: number; wHeadStride: number; xStride: number; yStride: number }): Dispatch {
  if (w.dtype !== 'f32') throw new KernelError('webgpu', `headMatmul: ${w.dtype} weight (f32 only)`);
  return K.dispatch('mla_head_mm', headMatmulWgsl, HEAD_MM_PARAMS, {
    rows: o.rows, cols: o.cols, heads: o.heads, wOff: o.wOff, wHeadStride: o.wHeadStride, xOff: x, xStride: o.xStride, yOff: y, yStride: o.yStride,
  }, b, [o.rows, o.heads, 1], w.buf);
}

/**
 * Lightning-indexer scores of the step's query over the n = step.pos + 1 cached keys:
 * a[scores + j] = scale · Σ_h a[w + h] · ReLU(a[q + h·Di …]·st[kCache + j·kStride …]); maxN bounds n.
 */
export function indexerScores(K: GpuKernels, b: GpuBufs, scores: number, q: number, w: number, kCache: number, o: { Hi: number; Di: number; maxN: number; scale: number; kStride?: number }): Dispatch {
  const groups = Math.ceil(o.maxN / INDEXER_WG);
  const { nx, ny } = K.split(groups);
  return K.dispatch('dsa_indexer', indexerWgsl, INDEXER_PARAMS, {
    Hi: o.Hi, Di: o.Di, qOff: q, wOff: w, kOff: kCache, kStride: o.kStride ?? o.Di, sOff: scores, nx, scale: o.scale,
  }, b, [nx, ny, 1]);
}

/**
 * Positions of the topk largest of a[scores, scores + n) (n = step.pos + 1), ascending, ties to the
 * lowest position, as f32 numbers at a[idx …]; all n positions when topk ≥ n.
 */
export function topkSelect(K: GpuKernels, b: GpuBufs, idx: number, scores: number, topk: number): Dispatch {
  if (!Number.isInteger(topk) || topk < 1) throw new KernelError('webgpu', `topkSelect: topk ${topk} must be ≥ 1`);
  return K.dispatch('dsa_topk', topkWgsl, TOPK_PARAMS, { topk, sOff: scores, idxOff: idx }, b, [1, 1, 1]);
}

export interface SparseAttnOptions {
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  /** Floats between query heads (default headDim). */
  qStride?: number;
  /** Floats between cache positions (defaults nKv·headDim, nKv·vDim). */
  kStride?: number;
  vStride?: number;
  /** Scratch of nHeads·maxN floats in `a`; maxN ≥ the positions attended. */
  scores: number;
  maxN: number;
  /** Attend only the min(topk, step.pos + 1) positions listed at a[idx …] (f32 numbers). */
  idx?: { off: number; topk: number };
}

/** One query token's attention over st-resident caches: every position 0 … step.pos, or the listed ones. */
export function sparseAttention(K: GpuKernels, b: GpuBufs, out: number, q: number, kCache: number, vCache: number, o: SparseAttnOptions): Dispatch {
  if (o.nHeads % o.nKv) throw new KernelError('webgpu', `sparseAttention: nHeads ${o.nHeads} is not a multiple of nKv ${o.nKv}`);
  return K.dispatch('sparse_attention', sparseAttentionWgsl, SPARSE_ATTN_PARAMS, {
    nHeads: o.nHeads, nKv: o.nKv, headDim: o.headDim, vDim: o.vDim, qOff: q, qStride: o.qStride ?? o.headDim, oOff: out, kOff: kCache, vOff: vCache,
    kStride: o.kStride ?? o.nKv * o.headDim, vStride: o.vStride ?? o.nKv * o.vDim, sOff: o.scores, maxN: o.maxN,
    useIdx: o.idx ? 1 : 0, idxOff: o.idx?.off ?? 0, topk: o.idx?.topk ?? 0, scale: o.scale,
  }, b, [o.nHeads, 1, 1]);
}

// ---- the mixers ------------------------------------------------------------------------------------

const f32Weight = (ptr: number, rows: number, cols: number): Weight => ({ ptr, dtype: 'f32', rows, cols });

function buildMla(B: GpuBuilder, m: MlaAttention, x: number, out: number, where: string, dsa: DsaAttention | null): void {
  const c = m.cfg;
  const { nHeads: H, qLora, kvLora: R, dNope, dRope, dV } = c;
  const dQk = dNope + dRope, L = m.latentDim, maxCtx = B.maxContext;
  if (dNope % 4 || R % 4) throw unsupported(`${where}: MLA with qk_nope_head_dim ${dNope} / kv_lora_rank ${R} not multiples of 4`);
  const A = B.act;
  const qa = m.qa ? A.take(qLora) : -1;
  const q = A.take(H * dQk), lat = A.take(L), qlat = A.take(H * L), olat = A.take(H * R), ao = A.take(H * dV);
  const sel = dsa ? Math.min(dsa.dsa.topk, maxCtx) : maxCtx;
  const scores = A.take(H * sel);
  const cache = B.state(maxCtx * L, 'kv', m.latentState);

  const qaW = m.qa ? B.weight(m.qa, `${m.prefix}.q_a_proj`) : null;
  const qbW = B.weight(m.qb, `${m.prefix}.${m.qa ? 'q_b_proj' : 'q_proj'}`);
  const kvaW = B.weight(m.kva, `${m.prefix}.kv_a_proj_with_mqa`);
  const oW = B.weight(m.o, `${m.prefix}.o_proj`);
  // W_UK_hᵀ for every head ([H·R, dNope], contiguous) and kv_b_proj itself (W_UV_h are its rows).
  const ukW = B.weight(f32Weight(m.ukT[0].ptr, H * R, dNope), `${m.prefix}.kv_b_proj (W_UK^T)`);
  if (m.uv[0].dtype !== 'f32') throw unsupported(`${where}: ${m.uv[0].dtype} kv_b_proj`);
  const kvbW = B.weight(f32Weight(m.uv[0].ptr - dNope * R * 4, H * (dNope + dV), R), `${m.prefix}.kv_b_proj`);
  const qaNorm = m.qa ? B.vec(m.qaNorm, qLora) : -1, kvaNorm = B.vec(m.kvaNorm, R);
  const bias = c.bias ? { qa: m.qa ? B.vec(m.qaBias, qLora) : -1, kva: B.vec(m.kvaBias, L), o: B.vec(m.oBias, c.hidden) } : null;
  const r = c.rope;
  const tab = ropeTables(B, { rotaryDim: dRope, invFreq: r.invFreq, attentionFactor: r.attentionFactor });

  // DeepSeek-V3.2's lightning indexer: its key cache, query, head weights, scores and picks.
  let ix: null | {
    Hi: number; Di: number; topk: number; kc: number; kRow: number; qI: number; wI: number; sc: number; idx: number;
    wk: GpuWeight; wqb: GpuWeight; wp: GpuWeight; kNormW: number; kNormB: number;
  } = null;
  if (dsa) {
    const { nHeads: Hi, headDim: Di, topk } = dsa.dsa;
    if (!m.qa) throw unsupported(`${where}: DSA without q_lora_rank`);
    ix = {
      Hi, Di, topk, kc: B.state(maxCtx * Di, 'kv', dsa.indexerState), kRow: A.take(Di), qI: A.take(Hi * Di), wI: A.take(Hi), sc: A.take(maxCtx), idx: A.take(sel),
      wk: B.weight(dsa.wk, `${m.prefix}.indexer.wk`), wqb: B.weight(dsa.wqb, `${m.prefix}.indexer.wq_b`), wp: B.weight(dsa.weightsProj, `${m.prefix}.indexer.weights_proj`),
      kNormW: B.vec(dsa.kNormW, Di), kNormB: B.vec(dsa.kNormB, Di),
    };
  }

  B.emit((b) => {
    const K = B.K, list: Dispatch[] = [];
    const addBias = (y: number, cb: number, n: number) => list.push(K.elementwise(b, EW.addConst, y, y, cb, n));
    // Query.
    if (qaW) {
      list.push(K.matmul(b, qa, x, qaW, 1));
      if (bias) addBias(qa, bias.qa, qLora);
      list.push(K.rmsNorm(b, qa, qa, qaNorm, 1, qLora, LORA_NORM_EPS));
    }
    list.push(K.matmul(b, q, qaW ? qa : x, qbW, 1));
    list.push(K.rope(b, q + dNope, 1, H, dQk, dRope, r.style, tab.cos, tab.sin, H * dQk));
    // Latent row [RMSNorm(c) | RoPE(k_rope)] into the cache at step.pos.
    list.push(K.matmul(b, lat, x, kvaW, 1));
    if (bias) addBias(lat, bias.kva, L);
    list.push(K.rmsNorm(b, lat, lat, kvaNorm, 1, R, LORA_NORM_EPS));
    list.push(K.rope(b, lat + R, 1, 1, dRope, dRope, r.style, tab.cos, tab.sin));
    list.push(K.copy(b, cache, lat, 1, L, { posStride: L, toState: true }));
    // Absorbed queries qlat[h] = [W_UK_hᵀ q_nope_h | q_rope_h].
    list.push(headMatmul(K, b, qlat, q, ukW, { rows: R, cols: dNope, heads: H, wOff: 0, wHeadStride: R * dNope, xStride: dQk, yStride: L }));
    list.push(K.copy(b, qlat + R, q + dNope, H, dRope, { srcStride: dQk, dstStride: L }));
    let idx: SparseAttnOptions['idx'];
    if (ix) {
      // Indexer key (LayerNorm, rotate-half RoPE on the first dRope dims) into its cache; query, weights.
      list.push(K.matmul(b, ix.kRow, x, ix.wk, 1));
      list.push(K.layerNorm(b, ix.kRow, ix.kRow, ix.kNormW, ix.kNormB, 1, ix.Di, INDEXER_NORM_EPS));
      list.push(K.rope(b, ix.kRow, 1, 1, ix.Di, dRope, 'neox', tab.cos, tab.sin));
      list.push(K.copy(b, ix.kc, ix.kRow, 1, ix.Di, { posStride: ix.Di, toState: true }));
      list.push(K.matmul(b, ix.qI, qa, ix.wqb, 1));
      list.push(K.rope(b, ix.qI, 1, ix.Hi, ix.Di, dRope, 'neox', tab.cos, tab.sin));
      list.push(K.matmul(b, ix.wI, x, ix.wp, 1));
      list.push(indexerScores(K, b, ix.sc, ix.qI, ix.wI, ix.kc, { Hi: ix.Hi, Di: ix.Di, maxN: maxCtx, scale: 1 / Math.sqrt(ix.Di) / Math.sqrt(ix.Hi) }));
      list.push(topkSelect(K, b, ix.idx, ix.sc, ix.topk));
      idx = { off: ix.idx, topk: ix.topk };
    }
    list.push(sparseAttention(K, b, olat, qlat, cache, cache, {
      nHeads: H, nKv: 1, headDim: L, vDim: R, scale: c.scale, kStride: L, vStride: L, scores, maxN: sel, idx,
    }));
    // o_h = W_UV_h olat_h (rows h·(dNope + dV) + dNope … of kv_b_proj), then o_proj.
    list.push(headMatmul(K, b, ao, olat, kvbW, { rows: dV, cols: R, heads: H, wOff: dNope * R, wHeadStride: (dNope + dV) * R, xStride: R, yStride: dV }));
    list.push(K.matmul(b, out, ao, oW, 1));
    if (bias) addBias(out, bias.o, c.hidden);
    return list;
  });
}

registerMixer(MlaAttention, (B, m: MlaAttention, x, out, where) => buildMla(B, m, x, out, where, null));
registerMixer(DsaAttention, (B, m: DsaAttention, x, out, where) => buildMla(B, m, x, out, where, m));
