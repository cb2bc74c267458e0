// Feed-forward dispatches: gated activations (optionally per routed expert) and MoE routing.

import type { GatedAct } from '../../graph/ops';
import { unsupported } from '../builder';
import { ACT_OP, actWgsl, ACT_PARAMS } from '../kernels/act.wgsl';
import { routerWgsl, ROUTER_PARAMS } from '../kernels/moe.wgsl';
import type { Dispatch, GpuBufs, GpuKernels } from '../ops';

export { ACT_OP };
export type { GatedAct };

const ceil = (a: number, b: number) => Math.ceil(a / b);

export function actOp(act: GatedAct): number {
  switch (act) {
    case 'silu': return ACT_OP.swiglu;
    case 'gelu_tanh': return ACT_OP.gegluTanh;
    case 'gelu': return ACT_OP.gegluErf;
    case 'relu2': return ACT_OP.relu2glu;
    case 'clamped_swiglu': return ACT_OP.clampedSwiglu;
    default: throw unsupported(`activation ${act}`);
  }
}

export interface ActOptions {
  /** Bias offsets in `c` added to g / u first (stacked [E, len] when idsOff is given). */
  gBias?: number;
  uBias?: number;
  /** Slot length: element i belongs to slot i / len (default n). */
  len?: number;
  /** Slot j's bias row is ids[idsOff + j]. */
  idsOff?: number;
  alpha?: number;
  limit?: number;
}

/** y[i] = op(g[i] (+ gate bias), u[i] (+ up bias)) over n floats of `a` (kernels/act.wgsl). */
export function activation(K: GpuKernels, b: GpuBufs, op: number, y: number, g: number, u: number, n: number, o: ActOptions = {}): Dispatch {
  const { nx, ny } = K.split(ceil(n, 256));
  const gb = o.gBias ?? -1, ub = o.uBias ?? -1;
  return K.dispatch('ffn_act', actWgsl, ACT_PARAMS, {
    n, op, yOff: y, gOff: g, uOff: u, nx, len: o.len ?? n, gbOff: Math.max(gb, 0), ubOff: Math.max(ub, 0),
    biasMask: (gb >= 0 ? 1 : 0) | (ub >= 0 ? 2 : 0), useIds: o.idsOff === undefined ? 0 : 1, idsOff: o.idsOff ?? 0,
    alpha: o.alpha ?? 1, limit: o.limit ?? 0,
  }, b, [nx, ny, 1]);
}

export interface RouteSpec {
  mode: 'softmax_topk' | 'topk_softmax' | 'sigmoid';
  renormalize?: boolean;
  /** Offset in `c` of the selection bias (sigmoid mode). */
  bias?: number;
  nGroup?: number;
  topkGroup?: number;
  routedScaling?: number;
  maskFill?: number;
  /** Offset in `c` of per-expert scales multiplying each pick's final weight. */
  expertScale?: number;
}

const MODES = { softmax_topk: 0, topk_softmax: 1, sigmoid: 2 } as const;

/** Routing of T rows of E logits (kernels/moe.wgsl router): ids to ids[idsOff …], weights to a[w …]. */
export function route(K: GpuKernels, b: GpuBufs, idsOff: number, w: number, logits: number, T: number, E: number, topk: number, r: RouteSpec): Dispatch {
  if (topk > 64 || topk > E) throw unsupported(`MoE top-${topk} of ${E} experts`);
  const nGroup = r.mode === 'sigmoid' ? r.nGroup ?? 1 : 1;
  if (nGroup > 64) throw unsupported(`MoE routing over ${nGroup} groups`);
  // −∞ as a fill selects like any value below every real score.
  const fill = Math.max(r.maskFill ?? 0, -3e38);
  return K.dispatch('router', routerWgsl, ROUTER_PARAMS, {
    E, K: topk, mode: MODES[r.mode], renorm: r.renormalize ? 1 : 0, logitsOff: logits, wOff: w, idsOff,
    biasOff: Math.max(r.bias ?? 0, 0), hasBias: r.bias !== undefined && r.mode === 'sigmoid' ? 1 : 0,
    nGroup, topkGroup: r.topkGroup ?? nGroup, scaling: r.routedScaling ?? 1, fill,
    esOff: r.expertScale ?? 0, hasEs: r.expertScale === undefined ? 0 : 1,
  }, b, [T, 1, 1]);
}
