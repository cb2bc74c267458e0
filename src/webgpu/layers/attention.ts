// Softmax attention (layers/attention.ts Attention) for decode: q/k/v projections with optional
// biases, per-head or full-width q/k RMSNorm, OLMoE's q/k/v clamp, RoPE from host-computed tables,
// the KV cache appended in `st` (full length even for sliding-window layers: the kernel attends only
// to the last `window` positions), GQA decode attention with optional logit soft-capping and
// per-head sink logits, Qwen3-Next's output gate, and the output projection with optional bias.

import { Attention } from '../../layers/attention';
import { KernelError } from '../../kernels/runtime';
import { registerMixer, type GpuBuilder } from '../builder';
import { EW, type Dispatch, type GpuBufs, type GpuKernels } from '../ops';
import { ATTN_MAX_HEAD_DIM, ATTN_PARAMS, attentionWgsl, CLAMP_PARAMS, clampWgsl } from '../kernels/attention.wgsl';

const tableCache = new WeakMap<GpuBuilder, Map<string, { cos: number; sin: number }>>();

/**
 * cos/sin tables [maxContext, rotaryDim/2] (attention factor folded in) as constants, built once per
 * distinct (rotaryDim, frequencies, factor) of a model: layers sharing a RoPE share its tables.
 */
export function ropeTables(B: GpuBuilder, r: { rotaryDim: number; invFreq: ArrayLike<number>; attentionFactor: number }): { cos: number; sin: number } {
  let cache = tableCache.get(B);
  if (!cache) tableCache.set(B, (cache = new Map()));
  const key = `${r.rotaryDim}|${r.attentionFactor}|${Array.from(r.invFreq).join(',')}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const L = B.maxContext, half = r.rotaryDim / 2;
  const ct = new Float32Array(L * half), sn = new Float32Array(L * half);
  for (let p = 0; p < L; p++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(p * r.invFreq[i]);
      ct[p * half + i] = Math.cos(ang) * r.attentionFactor;
      sn[p * half + i] = Math.sin(ang) * r.attentionFactor;
    }
  }
  const t = { cos: B.constant(ct), sin: B.constant(sn) };
  cache.set(key, t);
  return t;
}

export interface DecodeAttentionOptions {
  nHeads: number;
  nKv: number;
  headDim: number;
  vDim: number;
  scale: number;
  /** Offset in `a` of nHeads · maxN scratch floats for the score rows. */
  scores: number;
  /** Cache slots (positions) per head row of the scratch: step.pos must stay below it. */
  maxN: number;
  /** Sliding window W: the query at P sees positions > P − W (0 or absent: all). */
  window?: number;
  /** Scores become cap·tanh(score / cap) after scaling (0 or absent: none). */
  softcap?: number;
  /** Offset in `c` of nHeads sink logits (gpt-oss), joining the softmax denominator only. */
  sinks?: number;
}

/** Decode attention of the query at a[q] over st-resident caches holding positions 0 … step.pos. */
export function decodeAttention(K: GpuKernels, b: GpuBufs, out: number, q: number, kCache: number, vCache: number, o: DecodeAttentionOptions): Dispatch {
  const { nHeads, nKv, headDim, vDim } = o;
  if (headDim > ATTN_MAX_HEAD_DIM) throw new KernelError('webgpu', `attention: headDim ${headDim} > ${ATTN_MAX_HEAD_DIM} is not supported by the WebGPU kernel`);
  if (!(nKv >= 1) || nHeads % nKv) throw new KernelError('webgpu', `attention: nHeads ${nHeads} is not a multiple of nKv ${nKv}`);
  const cap = o.softcap ?? 0;
  if (!(cap >= 0) || !Number.isFinite(cap)) throw new KernelError('webgpu', `attention: softcap must be ≥ 0, got ${cap}`);
  if (!Number.isFinite(o.scale)) throw new KernelError('webgpu', `attention: scale must be finite, got ${o.scale}`);
  return K.dispatch('attention', attentionWgsl, ATTN_PARAMS, {
    nHeads, nKv, headDim, vDim, qOff: q, oOff: out, kOff: kCache, vOff: vCache,
    kStride: nKv * headDim, vStride: nKv * vDim, sOff: o.scores, maxN: o.maxN, scale: o.scale,
    window: o.window ?? 0, hasSinks: o.sinks === undefined ? 0 : 1, sinkOff: o.sinks ?? 0,
    softcap: cap, icap: cap > 0 ? Math.fround(1 / Math.fround(cap)) : 0,
  }, b, [nHeads, 1, 1]);
}

/** y[i] = min(max(x[i], −lim), lim) for i < n (offsets in `a`). */
export function clamp(K: GpuKernels, b: GpuBufs, y: number, x: number, n: number, lim: number): Dispatch {
  if (!(lim >= 0)) throw new KernelError('webgpu', `clamp: limit must be ≥ 0, got ${lim}`);
  const { nx, ny } = K.split(Math.ceil(n / 256));
  return K.dispatch('clamp', clampWgsl, CLAMP_PARAMS, { n, xOff: x, yOff: y, nx, lim }, b, [nx, ny, 1]);
}

const scoreScratch = new WeakMap<GpuBuilder, { off: number; n: number }>();

/** Score rows (n floats of `a`) shared by every attention layer of a model: the layers run one after another. */
export function scoresScratch(B: GpuBuilder, n: number): number {
  let s = scoreScratch.get(B);
  if (!s || s.n < n) scoreScratch.set(B, (s = { off: B.act.take(n), n }));
  return s.off;
}

registerMixer(Attention, (B: GpuBuilder, m: Attention, x: number, out: number, where: string) => {
  const c = m.cfg;
  const { nHeads, nKv, headDim } = c;
  const vDim = m.vDim;
  if (headDim > ATTN_MAX_HEAD_DIM) throw new KernelError('webgpu', `${where}: attention headDim ${headDim} > ${ATTN_MAX_HEAD_DIM} is not supported on WebGPU (use backend 'wasm')`);
  const qd = nHeads * headDim, kd = nKv * headDim, vd = nKv * vDim;
  const A = B.act, L = B.maxContext;
  const q = A.take(qd), gate = c.gated ? A.take(qd) : -1, raw = c.gated ? A.take(2 * qd) : -1;
  const kk = A.take(kd), v = A.take(vd), ao = A.take(nHeads * vDim), scores = scoresScratch(B, nHeads * L);
  const qW = B.weight(m.q, `${m.prefix}.q_proj`), kW = B.weight(m.kw, `${m.prefix}.k_proj`), vW = B.weight(m.v, `${m.prefix}.v_proj`), oW = B.weight(m.o, `${m.prefix}.o_proj`);
  const full = c.qkNorm?.full ?? false;
  const qn = c.qkNorm ? B.vec(m.qNorm, full ? qd : headDim) : -1, kn = c.qkNorm ? B.vec(m.kNorm, full ? kd : headDim) : -1;
  const bq = c.qkvBias ? B.vec(m.bq, m.q.rows) : -1, bk = c.qkvBias ? B.vec(m.bk, kd) : -1, bv = c.qkvBias ? B.vec(m.bv, vd) : -1;
  const bo = c.oBias ? B.vec(m.bo, c.hidden) : -1;
  const sinks = c.sinks ? B.vec(m.sinks, nHeads) : undefined;
  const r = c.rope;
  const tables = r ? ropeTables(B, r) : { cos: 0, sin: 0 };
  const kc = B.state(L * kd, 'kv', m.kState), vc = B.state(L * vd, 'kv', m.vState);
  const limit = B.K.gpu.limits.maxStorageBufferBindingSize;
  if (B.stateFloats * 4 > limit) {
    throw new KernelError('webgpu', `${where}: KV caches for ${L} positions need ${B.stateFloats * 4} bytes of state, over the device's storage binding limit ${limit} (use a shorter maxContext)`);
  }
  if (A.top * 4 > limit) throw new KernelError('webgpu', `${where}: attention scratch for ${L} positions exceeds the device's storage binding limit ${limit} (use a shorter maxContext)`);
  B.emit((b) => {
    const K = B.K, list: Dispatch[] = [];
    if (c.gated) {
      list.push(K.matmul(b, raw, x, qW, 1));
      if (bq >= 0) list.push(K.elementwise(b, EW.addConst, raw, raw, bq, 2 * qd));
      list.push(K.copy(b, q, raw, nHeads, headDim, { srcStride: 2 * headDim }));
      list.push(K.copy(b, gate, raw + headDim, nHeads, headDim, { srcStride: 2 * headDim }));
    } else {
      list.push(K.matmul(b, q, x, qW, 1));
      if (bq >= 0) list.push(K.elementwise(b, EW.addConst, q, q, bq, qd));
    }
    list.push(K.matmul(b, kk, x, kW, 1), K.matmul(b, v, x, vW, 1));
    if (bk >= 0) list.push(K.elementwise(b, EW.addConst, kk, kk, bk, kd), K.elementwise(b, EW.addConst, v, v, bv, vd));
    if (c.qkNorm) {
      const o = { addOne: c.qkNorm.addOne };
      list.push(K.rmsNorm(b, q, q, qn, full ? 1 : nHeads, full ? qd : headDim, c.qkNorm.eps, o));
      list.push(K.rmsNorm(b, kk, kk, kn, full ? 1 : nKv, full ? kd : headDim, c.qkNorm.eps, o));
    }
    if (c.clip !== undefined) list.push(clamp(K, b, q, q, qd, c.clip), clamp(K, b, kk, kk, kd, c.clip), clamp(K, b, v, v, vd, c.clip));
    if (r) {
      list.push(K.rope(b, q, 1, nHeads, headDim, r.rotaryDim, r.style, tables.cos, tables.sin));
      list.push(K.rope(b, kk, 1, nKv, headDim, r.rotaryDim, r.style, tables.cos, tables.sin));
    }
    list.push(K.copy(b, kc, kk, 1, kd, { posStride: kd, toState: true }));
    list.push(K.copy(b, vc, v, 1, vd, { posStride: vd, toState: true }));
    list.push(decodeAttention(K, b, ao, q, kc, vc, { nHeads, nKv, headDim, vDim, scale: c.scale, scores, maxN: L, window: c.window, softcap: c.softcap, sinks }));
    if (c.gated) list.push(K.elementwise(b, EW.mulSigmoid, ao, ao, gate, qd));
    list.push(K.matmul(b, out, ao, oW, 1));
    if (bo >= 0) list.push(K.elementwise(b, EW.addConst, out, out, bo, c.hidden));
    return list;
  });
});
