// Softmax attention with a KV cache: GQA/MQA, optional q/k RMSNorm, RoPE (full or partial),
// sliding window (ring-buffer cache on WASM), logit soft-capping, learned sinks, and Qwen3-Next's
// output gate. Keys are cached after RoPE at their absolute position, as f32 or, with the load option
// kvCache, as quantized rows (per head, blocks of 32; kernels/kvcache.ts) that attention reads in place.
// With the load option attention { mode: 'topk' } a layer without a sliding window also keeps the
// key bounds of each KV page (region `<prefix>.kpages.<pageSize>x<pages held>`, so that a snapshot
// restores only into the same layout) and attends sparsely at decode (ops.ts AttentionPages).

import type { Weight } from '../kernels/types';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import type { Graph, Tensor } from '../graph/graph';
import { attention, clamp, copy, kvAppend, linear, mulSigmoid, norm, rope, type AttentionPages, type RopeSpec } from '../graph/ops';
import type { Ctx, Mixer } from './context';

export type { RopeSpec };

/** Whether a state region holds a layer's page key bounds (sparse top-k attention). */
export const isPageBounds = (name: string) => /\.kpages\.\d+x\d+$/.test(name);

/** A mixer's page-bounds state (sparse top-k attention). */
export interface PageState {
  spec: RegionSpec;
  maxPages: number;
}

/**
 * The page-bounds region of a mixer's linear key cache under the load option attention
 * { mode: 'topk' } (null in dense mode, or for a sliding-window layer, which keeps its window). A
 * mixer with its own attention code opts in by listing `spec` in specs() and passing
 * attentionPages(…) as the `pages` argument of the attention op.
 */
export function pageBoundsState(ctx: Ctx, prefix: string, nKv: number, headDim: number, maxContext: number, window?: number): PageState | null {
  const mode = ctx.attention;
  if (mode.mode !== 'topk' || window) return null;
  const maxPages = Math.ceil(maxContext / mode.pageSize);
  return { spec: { name: `${prefix}.kpages.${mode.pageSize}x${maxPages}`, kind: 'fixed', floats: 2 * maxPages * nKv * headDim }, maxPages };
}

/** The attention op's `pages` argument for the pass's keys [rows, nKv·headDim] (f32, as appended); undefined when dense. */
export function attentionPages(ctx: Ctx, state: PageState | null, keys: Tensor): AttentionPages | undefined {
  const mode = ctx.attention;
  if (!state || mode.mode !== 'topk') return undefined;
  return { bounds: state.spec, maxPages: state.maxPages, keys, pageSize: mode.pageSize, pages: mode.pages, sinks: mode.sinks, window: mode.window };
}

export interface AttentionConfig {
  hidden: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  vHeadDim?: number;
  qkvBias: boolean;
  oBias: boolean;
  /**
   * RMSNorm of q and k before RoPE: per head (Qwen3, Gemma3, Qwen3-Next), or with `full` over the
   * whole projection width, weights [nHeads·headDim] and [nKv·headDim] (OLMoE).
   */
  qkNorm?: { eps: number; addOne: boolean; full?: boolean } | null;
  /** OLMoE clip_qkv: q, k, v clamped to [−clip, clip] after the q/k norms. */
  clip?: number;
  rope?: RopeSpec | null;
  scale: number;
  /** Sliding window W: a query at p sees keys at positions > p − W. */
  window?: number;
  softcap?: number;
  /** gpt-oss: a learned per-head logit added to the softmax denominator (tensor `<prefix>.sinks`). */
  sinks?: boolean;
  /** Qwen3-Next: q_proj emits [query | gate] per head; output ⊙ sigmoid(gate) before o_proj. */
  gated?: boolean;
  /** Sub-module names where a family departs from q_proj/k_proj/v_proj/o_proj/q_norm/k_norm (LFM2). */
  names?: { q?: string; k?: string; v?: string; o?: string; qNorm?: string; kNorm?: string };
}

export class Attention implements Mixer {
  readonly q: Weight;
  readonly kw: Weight;
  readonly v: Weight;
  readonly o: Weight;
  readonly bq: number;
  readonly bk: number;
  readonly bv: number;
  readonly bo: number;
  readonly qNorm: number;
  readonly kNorm: number;
  readonly sinks: number;
  readonly vDim: number;
  /** Session state: the key and value caches (rings for a sliding window shorter than the context). */
  kState!: RegionSpec;
  vState!: RegionSpec;
  /** Session state of sparse top-k attention: the key bounds of each page (null: dense). */
  pageState: PageState | null = null;
  /** The context the caches were declared for. */
  private declaredFor = -1;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: AttentionConfig) {
    const { ws } = ctx;
    const { hidden, nHeads, nKv, headDim } = cfg;
    this.vDim = cfg.vHeadDim ?? headDim;
    const nm = { q: 'q_proj', k: 'k_proj', v: 'v_proj', o: 'o_proj', qNorm: 'q_norm', kNorm: 'k_norm', ...cfg.names };
    this.q = ws.mat(`${prefix}.${nm.q}.weight`, nHeads * headDim * (cfg.gated ? 2 : 1), hidden);
    this.kw = ws.mat(`${prefix}.${nm.k}.weight`, nKv * headDim, hidden);
    this.v = ws.mat(`${prefix}.${nm.v}.weight`, nKv * this.vDim, hidden);
    this.o = ws.mat(`${prefix}.${nm.o}.weight`, hidden, nHeads * this.vDim);
    this.bq = cfg.qkvBias ? ws.vec(`${prefix}.${nm.q}.bias`, this.q.rows) : 0;
    this.bk = cfg.qkvBias ? ws.vec(`${prefix}.${nm.k}.bias`, this.kw.rows) : 0;
    this.bv = cfg.qkvBias ? ws.vec(`${prefix}.${nm.v}.bias`, this.v.rows) : 0;
    this.bo = cfg.oBias ? ws.vec(`${prefix}.${nm.o}.bias`, hidden) : 0;
    const fullNorm = cfg.qkNorm?.full ?? false;
    this.qNorm = cfg.qkNorm ? ws.vec(`${prefix}.${nm.qNorm}.weight`, fullNorm ? nHeads * headDim : headDim) : 0;
    this.kNorm = cfg.qkNorm ? ws.vec(`${prefix}.${nm.kNorm}.weight`, fullNorm ? nKv * headDim : headDim) : 0;
    this.sinks = cfg.sinks ? ws.vec(`${prefix}.sinks`, nHeads) : 0;
  }

  specs(maxContext: number): RegionSpec[] {
    if (maxContext !== this.declaredFor) {
      const { nKv, headDim, window } = this.cfg;
      const ring = !!window && window + this.ctx.maxChunk - 1 < maxContext;
      const capacity = window! + this.ctx.maxChunk - 1;
      const type = this.ctx.kvCache;
      this.kState = kvCacheRegion(`${this.prefix}.k`, nKv, headDim, type, ring ? capacity : undefined);
      this.vState = kvCacheRegion(`${this.prefix}.v`, nKv, this.vDim, type, ring ? capacity : undefined);
      this.pageState = pageBoundsState(this.ctx, this.prefix, nKv, headDim, maxContext, window);
      this.declaredFor = maxContext;
    }
    return this.pageState ? [this.kState, this.vState, this.pageState.spec] : [this.kState, this.vState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { cfg } = this;
    const { nHeads, nKv, headDim } = cfg;
    const qd = nHeads * headDim, kd = nKv * headDim, vd = nKv * this.vDim;
    const q = g.tmp(qd), kk = g.tmp(kd), v = g.tmp(vd), ao = g.tmp(nHeads * this.vDim);
    let gate: Tensor | null = null;
    if (cfg.gated) {
      // q_proj rows are per head [query(headDim) | gate(headDim)].
      const raw = g.tmp(2 * qd);
      gate = g.tmp(qd);
      linear(g, raw, x, this.q, this.bq);
      copy(g, q, raw, { chunks: nHeads, len: headDim, xStride: 2 * headDim });
      copy(g, gate, raw, { chunks: nHeads, len: headDim, xOff: headDim, xStride: 2 * headDim });
    } else {
      linear(g, q, x, this.q, this.bq);
    }
    linear(g, kk, x, this.kw, this.bk);
    linear(g, v, x, this.v, this.bv);
    if (cfg.qkNorm) {
      const full = cfg.qkNorm.full ?? false;
      const n = { eps: cfg.qkNorm.eps, addOne: cfg.qkNorm.addOne };
      norm(g, { ...n, w: this.qNorm }, q, q, full ? qd : headDim);
      norm(g, { ...n, w: this.kNorm }, kk, kk, full ? kd : headDim);
    }
    if (cfg.clip !== undefined) {
      clamp(g, q, q, cfg.clip);
      clamp(g, kk, kk, cfg.clip);
      clamp(g, v, v, cfg.clip);
    }
    if (cfg.rope) {
      rope(g, q, nHeads, headDim, cfg.rope);
      rope(g, kk, nKv, headDim, cfg.rope);
    }
    kvAppend(g, this.kState, kk);
    kvAppend(g, this.vState, v);
    const pages = attentionPages(this.ctx, this.pageState, kk);
    attention(g, {
      y: ao, q, k: this.kState, v: this.vState, nHeads, nKv, headDim, vDim: this.vDim, scale: cfg.scale,
      window: cfg.window, softcap: cfg.softcap, sinks: this.sinks || undefined, ...(pages ? { pages } : {}),
    });
    if (gate) mulSigmoid(g, ao, ao, gate);
    linear(g, out, ao, this.o, this.bo);
  }
}
