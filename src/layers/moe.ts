// Sparse mixture of experts: route each token to its top-k experts, run only those experts and mix
// their outputs with the routing weights; optional shared expert with an optional sigmoid gate.
// The layer is one `moe` op (graph/ops.ts): executors group tokens per expert (WASM) or run the
// routed experts through stacked weights (WebGPU).

import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { moe, type GatedAct, type GatedWeights, type MoeSpec } from '../graph/ops';
import type { Ctx, Ffn } from './context';

/** A MoE layer as a family describes it: the op's spec (graph/ops.ts MoeSpec) with defaults for the name and the shared expert's activation. */
export interface MoeConfig extends Omit<MoeSpec, 'name' | 'shared' | 'calls'> {
  /** The layer's name in errors (default: from the router weight's name). */
  name?: string;
  /** The shared expert (activation: the experts' unless given). */
  shared?: { w: GatedWeights; inter: number; gate?: Weight; act?: GatedAct };
}

export class Moe implements Ffn {
  /** Experts run since construction (WASM): tests assert unselected ones are never touched. */
  readonly expertCalls: Int32Array;
  readonly spec: MoeSpec;
  constructor(readonly ctx: Ctx, readonly cfg: MoeConfig) {
    this.expertCalls = new Int32Array(cfg.nExperts);
    const experts: (GatedWeights | null)[] = new Array(cfg.nExperts).fill(null);
    const sh = cfg.shared;
    this.spec = {
      name: cfg.name ?? cfg.router.name?.replace(/\.weight$/, '') ?? 'MoE layer',
      hidden: cfg.hidden, nExperts: cfg.nExperts, topk: cfg.topk, inter: cfg.inter,
      act: cfg.act, alpha: cfg.alpha, limit: cfg.limit, routing: cfg.routing, router: cfg.router, routerBias: cfg.routerBias,
      expert: (e) => (experts[e] ??= cfg.expert(e)),
      shared: sh ? { w: sh.w, act: sh.act ?? (cfg.act === 'clamped_swiglu' ? 'silu' : cfg.act), gate: sh.gate } : undefined,
      calls: this.expertCalls,
    };
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    moe(g, out, x, this.spec);
  }
}
