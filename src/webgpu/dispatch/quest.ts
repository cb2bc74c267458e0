// Dispatches of sparse top-k attention over Quest pages (kernels in ../kernels/sparse_attention.wgsl.ts;
// the WASM counterparts are src/kernels/attention.ts questAppendKeys and questAttend). Offsets are
// in floats of `a` / words of `st`.

import type { KvCacheType } from '../../kernels/kvcache';
import { KernelError } from '../../kernels/runtime';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';
import {
  QUEST_APPEND_PARAMS, QUEST_ATTN_PARAMS, QUEST_LIST_PARAMS, QUEST_SCORES_PARAMS, QUEST_TOPK_PARAMS, QUEST_WG,
  questAppendWgsl, questAttentionWgsl, questListWgsl, questScoresWgsl, questTopkWgsl,
} from '../kernels/sparse_attention.wgsl';

export interface QuestShape {
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  pageSize: number;
  pages: number;
  sinks: number;
  window: number;
  /** Pages the bounds hold (⌈maxContext / pageSize⌉). */
  maxPages: number;
}

/** Positions a sparse step attends at most; a context of at most this many is attended densely. */
export const questBudget = (o: QuestShape) => o.sinks + o.window + o.pages * o.pageSize;

/** Floats of `a` scratch questDecode takes besides the attention scores: page scores, chosen pages, position lists. */
export function questScratchFloats(o: QuestShape): number {
  return o.nKv * o.maxPages + o.nKv * o.pages + o.nKv * (questBudget(o) + 1);
}

/** Folds `rows` key rows (a[keys …], kRow floats apart; positions step.pos …) into the page bounds at st[bounds …]. */
export function questAppend(K: GpuKernels, b: GpuBufs, bounds: number, keys: number, rows: number, kRow: number, o: QuestShape): Dispatch {
  const W = o.nKv * o.headDim;
  const { nx, ny } = K.split(Math.ceil(W / QUEST_WG));
  return K.dispatch('quest_append', questAppendWgsl, QUEST_APPEND_PARAMS, {
    W, kOff: keys, kRow, bOff: bounds, maxW: o.maxPages * W, pageSize: o.pageSize, rows, nx,
  }, b, [nx, ny, 1]);
}

const attnCodes = new Map<KvCacheType, string>();

/**
 * One query (a[q …], heads contiguous) at position step.pos: page scores, top pages per kv head,
 * position lists and attention over them into a[out …]; every position when the context is within
 * the budget or the row is a prompt's (step.prompt). scratch: questScratchFloats(o) floats of `a`;
 * scores: nHeads rows of maxN ≥ maxContext floats. Caches as decodeAttention takes them.
 */
export function questDecode(K: GpuKernels, b: GpuBufs, out: number, q: number, kCache: number, vCache: number, bounds: number, scratch: number,
  o: QuestShape & { scale: number; scores: number; maxN: number; softcap?: number; sinkLogits?: number; cache?: KvCacheType; kStride?: number; vStride?: number }): Dispatch[] {
  const { nHeads, nKv, headDim, vDim, pageSize, pages, sinks, window, maxPages } = o;
  if (nHeads % nKv) throw new KernelError('webgpu', `questDecode: nHeads ${nHeads} is not a multiple of nKv ${nKv}`);
  const cap = o.softcap ?? 0;
  if (!(cap >= 0) || !Number.isFinite(cap)) throw new KernelError('webgpu', `questDecode: softcap must be ≥ 0, got ${cap}`);
  const cache = o.cache ?? 'f32';
  if (cache !== 'f32' && (o.kStride === undefined || o.vStride === undefined)) throw new KernelError('webgpu', `questDecode: a ${cache} cache needs its row strides`);
  const budget = questBudget(o);
  const scores = scratch, idx = scores + nKv * maxPages, list = idx + nKv * pages;
  const sel = { pageSize, sinks, window, budget };
  let code = attnCodes.get(cache);
  if (code === undefined) attnCodes.set(cache, (code = questAttentionWgsl(cache)));
  return [
    K.dispatch('quest_scores', questScoresWgsl, QUEST_SCORES_PARAMS, {
      nKv, G: nHeads / nKv, D: headDim, qOff: q, bOff: bounds, maxW: maxPages * nKv * headDim, sOff: scores, maxPages, ...sel,
    }, b, [Math.ceil(maxPages / QUEST_WG), nKv, 1]),
    K.dispatch('quest_topk', questTopkWgsl, QUEST_TOPK_PARAMS, { topk: pages, sOff: scores, idxOff: idx, maxPages, ...sel }, b, [nKv, 1, 1]),
    K.dispatch('quest_list', questListWgsl, QUEST_LIST_PARAMS, { pages, idxOff: idx, listOff: list, ...sel }, b, [nKv, 1, 1]),
    K.dispatch(cache === 'f32' ? 'quest_attention' : `quest_attention_${cache}`, code, QUEST_ATTN_PARAMS, {
      nHeads, nKv, headDim, vDim, qOff: q, oOff: out, kOff: kCache, vOff: vCache,
      kStride: o.kStride ?? nKv * headDim, vStride: o.vStride ?? nKv * vDim, sOff: o.scores, maxN: o.maxN, scale: o.scale,
      hasSinks: o.sinkLogits === undefined ? 0 : 1, sinkOff: o.sinkLogits ?? 0,
      softcap: cap, icap: cap > 0 ? Math.fround(1 / Math.fround(cap)) : 0, budget, listOff: list,
    }, b, [nHeads, 1, 1]),
  ];
}
