// Sparse mixture of experts: route each token to its top-k experts, run only those experts
// (tokens grouped per expert so each selected expert's weights stream once per chunk), and mix
// the outputs with the routing weights. Optional shared expert with an optional sigmoid gate.

import { route, type RouteOptions } from '../kernels/moe';
import type { Weight } from '../kernels/types';
import { KernelError } from '../kernels/runtime';
import { addBias, type Ctx, type Ffn } from './context';
import { gatedFfn, reserveGatedFfn, type Activation, type GatedWeights } from './mlp';

export interface MoeConfig {
  /** The layer's name in errors (default: from the router weight's name). */
  name?: string;
  hidden: number;
  nExperts: number;
  topk: number;
  inter: number;
  act: Activation;
  routing: RouteOptions;
  router: Weight;
  routerBias?: number;
  expert: (e: number) => GatedWeights;
  /** Custom expert body (gpt-oss clamped SwiGLU); default is gatedFfn. */
  runExpert?: (ctx: Ctx, e: number, x: number, y: number, n: number) => void;
  shared?: { w: GatedWeights; inter: number; gate?: Weight };
}

export class Moe implements Ffn {
  private readonly experts: (GatedWeights | null)[];
  /** Experts run since construction: tests assert unselected ones are never touched. */
  readonly expertCalls: Int32Array;
  constructor(readonly ctx: Ctx, readonly cfg: MoeConfig) {
    const C = ctx.maxChunk;
    this.experts = new Array(cfg.nExperts).fill(null);
    this.expertCalls = new Int32Array(cfg.nExperts);
    ctx.scratch.need('moe.logits', C * cfg.nExperts);
    ctx.scratch.need('moe.ids', C * cfg.topk);
    ctx.scratch.need('moe.w', C * cfg.topk);
    ctx.scratch.need('moe.xs', C * cfg.hidden);
    ctx.scratch.need('moe.ys', C * cfg.hidden);
    reserveGatedFfn(ctx, cfg.inter, C, 'moe.e');
    if (cfg.shared) {
      reserveGatedFfn(ctx, cfg.shared.inter, C, 'moe.s');
      ctx.scratch.need('moe.sg', C);
    }
  }

  /** The error for routing that picked no valid expert: non-finite router logits, named with the layer. */
  private badRouting(logits: number, T: number, t: number): never {
    const E = this.cfg.nExperts;
    const lv = this.ctx.f32(logits, T * E);
    let bad = -1;
    for (let i = 0; i < T * E && bad < 0; i++) if (!Number.isFinite(lv[i])) bad = i;
    const where = this.cfg.name ?? this.cfg.router.name?.replace(/\.weight$/, '') ?? 'MoE layer';
    const detail = bad >= 0
      ? `router logit ${bad % E} of token ${Math.floor(bad / E)} is ${lv[bad]}: the weights or the activations reaching this layer are not finite (NaN or infinite values in the checkpoint?)`
      : `token ${t} was routed to no valid expert`;
    throw new KernelError('moe', `${where}: ${detail}`);
  }

  private expert(e: number): GatedWeights {
    return (this.experts[e] ??= this.cfg.expert(e));
  }

  forward(x: number, out: number, T: number): void {
    const { ctx, cfg } = this;
    const { k } = ctx;
    const D = cfg.hidden, E = cfg.nExperts, K = cfg.topk;
    const s = ctx.scratch;
    const logits = s.get('moe.logits'), ids = s.get('moe.ids'), w = s.get('moe.w');
    ctx.mm(logits, x, cfg.router, T);
    addBias(ctx, logits, cfg.routerBias ?? 0, T, E);
    // Top-k passes over NaN scores silently; non-finite router logits are an error, not a routing.
    const lv = ctx.f32(logits, T * E);
    for (let i = 0; i < T * E; i++) if (!Number.isFinite(lv[i])) this.badRouting(logits, T, Math.floor(i / E));
    route(k, ids, w, logits, T, E, K, cfg.routing);

    const idv = k.arena.i32(ids, T * K).slice();
    const wv = ctx.f32(w, T * K).slice();
    for (let i = 0; i < T * K; i++) {
      if (!(idv[i] >= 0 && idv[i] < E) || !Number.isFinite(wv[i])) this.badRouting(logits, T, Math.floor(i / K));
    }
    const byExpert: number[][] = Array.from({ length: E }, () => []);
    for (let i = 0; i < T * K; i++) byExpert[idv[i]].push(i);

    const o = ctx.f32(out, T * D);
    o.fill(0);
    const xs = s.get('moe.xs'), ys = s.get('moe.ys');
    for (let e = 0; e < E; e++) {
      const sel = byExpert[e];
      if (!sel.length) continue;
      this.expertCalls[e]++;
      const xv = ctx.f32(x, T * D), xsv = ctx.f32(xs, sel.length * D);
      for (let j = 0; j < sel.length; j++) {
        const t = Math.floor(sel[j] / K);
        xsv.set(xv.subarray(t * D, (t + 1) * D), j * D);
      }
      if (cfg.runExpert) cfg.runExpert(ctx, e, xs, ys, sel.length);
      else gatedFfn(ctx, this.expert(e), cfg.act, xs, ys, sel.length, 'moe.e');
      const ysv = ctx.f32(ys, sel.length * D), ov = ctx.f32(out, T * D);
      for (let j = 0; j < sel.length; j++) {
        const t = Math.floor(sel[j] / K), wt = wv[sel[j]];
        for (let d = 0; d < D; d++) ov[t * D + d] += wt * ysv[j * D + d];
      }
    }
    if (cfg.shared) {
      gatedFfn(ctx, cfg.shared.w, cfg.act, x, ys, T, 'moe.s');
      const ysv = ctx.f32(ys, T * D), ov = ctx.f32(out, T * D);
      if (cfg.shared.gate) {
        const sg = s.get('moe.sg');
        ctx.mm(sg, x, cfg.shared.gate, T);
        const g = ctx.f32(sg, T);
        for (let t = 0; t < T; t++) {
          const gt = 1 / (1 + Math.exp(-g[t]));
          for (let d = 0; d < D; d++) ov[t * D + d] += gt * ysv[t * D + d];
        }
      } else {
        for (let i = 0; i < T * D; i++) ov[i] += ysv[i];
      }
    }
  }
}
