// WebGPU implementation of the zero-expert MoE (src/graph/ops-zeromoe.ts): routing, real-expert products
// and mixing stay on the GPU (kernels/zeromoe.wgsl.ts for the router and the mix, the routed-expert
// matmuls of the core MoE for the experts). Rows are routed in groups whose slots fit below TOKENS_BASE.

import { ZERO_MOE } from '../graph/ops-zeromoe';
import { sameShape } from '../graph/graph';
import { KernelError } from '../kernels/runtime';
import { actOp, activation } from './dispatch/ffn';
import { GPU_OPS as G } from './graph';
import { zeroCombineWgsl, ZERO_COMBINE_PARAMS, zeroRouterWgsl, ZERO_ROUTER_PARAMS } from './kernels/zeromoe.wgsl';
import { EW, TOKENS_BASE, type Dispatch } from './ops';

const ceil = (a: number, b: number) => Math.ceil(a / b);

G.set(ZERO_MOE, (g, a) => {
  sameShape('moe', a.x, a.y);
  const c = a.spec, where = c.name, D = c.hidden;
  const E = c.nExperts, N = E + c.nZero, Kk = c.topk, I = c.inter;
  if (Kk > 64 || Kk > N) throw new KernelError('webgpu', `${where}: top-${Kk} of ${N} experts (at most 64)`);
  const op = actOp(c.act);
  const B = g.B, T = a.x.rows;
  const router = B.weight(c.router, `${where}.router`);
  const routerBias = c.routerBias ? B.vec(c.routerBias, N) : undefined;
  const bias = c.bias ? B.vec(c.bias, N) : undefined;
  const experts = Array.from({ length: E }, (_, e) => c.expert(e));
  const eg = B.stack(experts.map((w) => w.gate), `${where}.experts.gate`);
  const eu = B.stack(experts.map((w) => w.up), `${where}.experts.up`);
  const ed = B.stack(experts.map((w) => w.down), `${where}.experts.down`);
  const R = Math.max(1, Math.min(T, Math.floor(TOKENS_BASE / Kk)));
  const perOutput = T > 1;
  const logits = g.tmp(N, R).off, rw = g.tmp(Kk, R).off, zw = g.tmp(1, R).off;
  const yg = g.tmp(Kk * I, R).off, yu = g.tmp(Kk * I, R).off, yd = g.tmp(Kk * D, R).off;
  g.emit((b) => {
    const K = g.K, list: Dispatch[] = [];
    for (let r0 = 0; r0 < T; r0 += R) {
      const rows = Math.min(R, T - r0), x = a.x.off + r0 * D, out = a.y.off + r0 * D, slots = rows * Kk;
      list.push(K.matmul(b, logits, x, router, rows, { xStride: D, perOutput }));
      if (routerBias !== undefined) list.push(K.elementwise(b, EW.addConst, logits, logits, routerBias, rows * N, { period: N }));
      list.push(K.dispatch('zero_router', zeroRouterWgsl, ZERO_ROUTER_PARAMS, {
        N, E, K: Kk, logitsOff: logits, wOff: rw, zwOff: zw, idsOff: 0, biasOff: bias ?? 0, hasBias: bias === undefined ? 0 : 1, scaling: c.routedScaling,
      }, b, [rows, 1, 1]));
      list.push(
        K.matmul(b, yg, x, eg, slots, { idsOff: 0, xStride: D, xDiv: Kk, yStride: I, perOutput }),
        K.matmul(b, yu, x, eu, slots, { idsOff: 0, xStride: D, xDiv: Kk, yStride: I, perOutput }),
        activation(K, b, op, yg, yg, yu, slots * I, { len: I, idsOff: 0 }),
        K.matmul(b, yd, yg, ed, slots, { idsOff: 0, xStride: I, yStride: D, perOutput }),
      );
      list.push(K.dispatch('zero_combine', zeroCombineWgsl, ZERO_COMBINE_PARAMS, { D, K: Kk, yOff: yd, wOff: rw, zwOff: zw, xOff: x, outOff: out }, b, [ceil(D, 64), rows, 1]));
    }
    return list;
  });
});
