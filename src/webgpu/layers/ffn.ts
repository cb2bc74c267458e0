// Feed-forward layers: gated MLPs (SiLU, GELU tanh / erf, relu² gating; optional biases) and mixtures
// of experts whose routing (every mode of src/kernels/moe.ts, router bias), expert products (per-expert
// biases, gpt-oss clamped SwiGLU), shared expert (optional sigmoid gate) and mixing all stay on the GPU:
// the expert ids go through `ids`, so a decode step never reads back a routing decision.

import { GatedMlp, type Activation, type GatedWeights } from '../../layers/mlp';
import { Moe } from '../../layers/moe';
import { SharedMlp } from '../../models/granitemoehybrid';
import { Lfm2Mlp } from '../../models/lfm2';
import { registerFfn, unsupported, type GpuBuilder } from '../builder';
import { ACT_OP, actWgsl, ACT_PARAMS } from '../kernels/act.wgsl';
import { routerWgsl, ROUTER_PARAMS } from '../kernels/moe.wgsl';
import { EW, type Dispatch, type GpuBufs, type GpuKernels, type GpuWeight } from '../ops';

const ceil = (a: number, b: number) => Math.ceil(a / b);

/** The gated op of an activation, or the clamped SwiGLU of gpt-oss experts. */
export type GatedAct = Activation | 'clamped_swiglu';

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
  }, b, [T, 1, 1]);
}

export interface GpuGated {
  gate: GpuWeight;
  up: GpuWeight;
  down: GpuWeight;
  gateBias?: number;
  upBias?: number;
  downBias?: number;
  inter: number;
}

/** Uploads a gated MLP's matrices; its biases become constants. */
export function gatedWeights(B: GpuBuilder, w: GatedWeights, label: string): GpuGated {
  const I = w.gate.rows, D = w.down.rows;
  return {
    gate: B.weight(w.gate, `${label}.gate`), up: B.weight(w.up, `${label}.up`), down: B.weight(w.down, `${label}.down`),
    gateBias: w.gateBias ? B.vec(w.gateBias, I) : undefined,
    upBias: w.upBias ? B.vec(w.upBias, I) : undefined,
    downBias: w.downBias ? B.vec(w.downBias, D) : undefined,
    inter: I,
  };
}

/** out[D] = down(act(gate x + b_g) ⊙ (up x + b_u)) + b_d, scratch taken from B.act. */
export function gatedMlp(B: GpuBuilder, w: GatedWeights, act: GatedAct, x: number, out: number, label: string): void {
  const g = gatedWeights(B, w, label);
  const I = g.inter, D = w.down.rows, op = actOp(act);
  const gs = B.act.take(I), us = B.act.take(I);
  B.emit((b) => {
    const K = B.K;
    const list = [
      K.matmul(b, gs, x, g.gate, 1), K.matmul(b, us, x, g.up, 1),
      activation(K, b, op, gs, gs, us, I, { gBias: g.gateBias, uBias: g.upBias }),
      K.matmul(b, out, gs, g.down, 1),
    ];
    if (g.downBias !== undefined) list.push(K.elementwise(b, EW.addConst, out, out, g.downBias, D));
    return list;
  });
}

registerFfn(GatedMlp, (B: GpuBuilder, f: GatedMlp, x: number, out: number, where: string) => {
  gatedMlp(B, f.w, f.act, x, out, `${where}.mlp`);
});

/** Stacked per-expert bias vectors [E, n] as one constant, or undefined when no expert has one. */
function stackedBias(B: GpuBuilder, ptrs: (number | undefined)[], n: number): number | undefined {
  if (!ptrs.some((p) => p)) return undefined;
  const all = new Float32Array(ptrs.length * n);
  ptrs.forEach((p, e) => {
    if (p) all.set(B.model.k.arena.f32(p, n), e * n);
  });
  return B.constant(all);
}

/** gpt-oss experts (GptOssExperts._apply_gate): clamped SwiGLU, α = 1.702, limit 7 (src/models/gpt_oss.ts). */
const CLAMPED = { alpha: 1.702, limit: 7.0 };

registerFfn(Moe, (B: GpuBuilder, f: Moe, x: number, out: number, where: string) => {
  const c = f.cfg, A = B.act, D = B.model.net.hidden;
  let act: GatedAct = c.act;
  if (c.runExpert) {
    // The only custom expert body is gpt-oss's clamped SwiGLU (its closure is not inspectable).
    if (B.model.modelType !== 'gpt_oss') throw unsupported(`${where}: MoE custom experts (${B.model.modelType})`);
    act = 'clamped_swiglu';
  }
  const op = actOp(act);
  const E = c.nExperts, Kk = c.topk, I = c.inter;
  const router = B.weight(c.router, `${where}.router`);
  const routerBias = c.routerBias ? B.vec(c.routerBias, E) : undefined;
  const rBias = c.routing.bias ? B.vec(c.routing.bias, E) : undefined;
  const experts = Array.from({ length: E }, (_, e) => c.expert(e));
  const eg = B.stack(experts.map((w) => w.gate), `${where}.experts.gate`);
  const eu = B.stack(experts.map((w) => w.up), `${where}.experts.up`);
  const ed = B.stack(experts.map((w) => w.down), `${where}.experts.down`);
  const gb = stackedBias(B, experts.map((w) => w.gateBias), I);
  const ub = stackedBias(B, experts.map((w) => w.upBias), I);
  const db = stackedBias(B, experts.map((w) => w.downBias), D);
  const logits = A.take(E), rw = A.take(Kk), yg = A.take(Kk * I), yu = A.take(Kk * I), yd = A.take(Kk * D);
  const sy = c.shared ? A.take(D) : -1, sgate = c.shared?.gate ? A.take(1) : -1;
  if (c.shared) gatedMlp(B, c.shared.w, c.act, x, sy, `${where}.shared`);
  const sgW = c.shared?.gate ? B.weight(c.shared.gate, `${where}.shared_gate`) : null;
  B.emit((b) => {
    const K = B.K;
    const list = [K.matmul(b, logits, x, router, 1)];
    if (routerBias !== undefined) list.push(K.elementwise(b, EW.addConst, logits, logits, routerBias, E));
    list.push(
      route(K, b, 0, rw, logits, 1, E, Kk, { ...c.routing, bias: rBias }),
      K.matmul(b, yg, x, eg, Kk, { idsOff: 0, xStride: 0, yStride: I }),
      K.matmul(b, yu, x, eu, Kk, { idsOff: 0, xStride: 0, yStride: I }),
      activation(K, b, op, yg, yg, yu, Kk * I, { gBias: gb, uBias: ub, len: I, idsOff: 0, ...(act === 'clamped_swiglu' ? CLAMPED : {}) }),
      K.matmul(b, yd, yg, ed, Kk, { idsOff: 0, xStride: I, yStride: D }),
    );
    if (db !== undefined) list.push(activation(K, b, ACT_OP.bias, yd, yd, yd, Kk * D, { gBias: db, len: D, idsOff: 0 }));
    if (sgW) list.push(K.matmul(b, sgate, x, sgW, 1));
    list.push(K.moeCombine(b, out, yd, rw, D, Kk, c.shared ? { y: sy, gate: sgW ? sgate : undefined } : undefined));
    return list;
  });
});

// Family MLPs that are gated MLPs under other tensor names.
registerFfn(SharedMlp, (B: GpuBuilder, f: SharedMlp, x: number, out: number, where: string) => {
  gatedMlp(B, f.w, f.act, x, out, `${where}.shared_mlp`);
});
registerFfn(Lfm2Mlp, (B: GpuBuilder, f: Lfm2Mlp, x: number, out: number, where: string) => {
  gatedMlp(B, f.w, 'silu', x, out, `${where}.feed_forward`);
});
