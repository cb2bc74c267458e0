// Feed-forward layers: the gated MLP (SiLU) and softmax-top-k mixtures of experts whose routing,
// expert products and mixing all stay on the GPU (expert ids go through `ids`).

import { GatedMlp, type GatedWeights } from '../../layers/mlp';
import { Moe } from '../../layers/moe';
import { registerFfn, unsupported, type GpuBuilder } from '../builder';
import { EW, type GpuWeight } from '../ops';

export function gatedWeights(B: GpuBuilder, w: GatedWeights, label: string): { gate: GpuWeight; up: GpuWeight; down: GpuWeight } {
  if (w.gateBias || w.upBias || w.downBias) throw unsupported(`${label}: MLP biases`);
  return { gate: B.weight(w.gate, `${label}.gate`), up: B.weight(w.up, `${label}.up`), down: B.weight(w.down, `${label}.down`) };
}

registerFfn(GatedMlp, (B: GpuBuilder, f: GatedMlp, x: number, out: number, where: string) => {
  if (f.act !== 'silu') throw unsupported(`${where}: ${f.act} MLP`);
  const w = gatedWeights(B, f.w, `${where}.mlp`);
  const I = f.w.gate.rows, g = B.act.take(I), u = B.act.take(I);
  B.emit((b) => [
    B.K.matmul(b, g, x, w.gate, 1), B.K.matmul(b, u, x, w.up, 1),
    B.K.elementwise(b, EW.swiglu, g, g, u, I), B.K.matmul(b, out, g, w.down, 1),
  ]);
});

registerFfn(Moe, (B: GpuBuilder, f: Moe, x: number, out: number, where: string) => {
  const c = f.cfg, A = B.act, D = B.model.net.hidden;
  if (c.routing.mode !== 'softmax_topk' || c.routing.bias || c.routing.routedScaling || c.routing.nGroup) throw unsupported(`${where}: MoE routing ${c.routing.mode}`);
  if (c.routerBias || c.runExpert || c.act !== 'silu') throw unsupported(`${where}: MoE router bias / custom experts / ${c.act}`);
  const E = c.nExperts, Kk = c.topk, I = c.inter;
  const router = B.weight(c.router, `${where}.router`);
  const experts = Array.from({ length: E }, (_, e) => c.expert(e));
  const eg = B.stack(experts.map((w) => w.gate), `${where}.experts.gate`);
  const eu = B.stack(experts.map((w) => w.up), `${where}.experts.up`);
  const ed = B.stack(experts.map((w) => w.down), `${where}.experts.down`);
  const logits = A.take(E), rw = A.take(Kk), yg = A.take(Kk * I), yu = A.take(Kk * I), yd = A.take(Kk * D);
  const sh = c.shared ? gatedWeights(B, c.shared.w, `${where}.shared`) : null;
  const sI = c.shared?.inter ?? 0;
  const sg = sh ? A.take(sI) : -1, su = sh ? A.take(sI) : -1, sy = sh ? A.take(D) : -1, sgate = c.shared?.gate ? A.take(1) : -1;
  const sgW = c.shared?.gate ? B.weight(c.shared.gate, `${where}.shared_gate`) : null;
  B.emit((b) => {
    const K = B.K;
    const list = [
      K.matmul(b, logits, x, router, 1),
      K.route(b, 0, rw, logits, 1, E, Kk, c.routing.renormalize ?? false),
      K.matmul(b, yg, x, eg, Kk, { idsOff: 0, xStride: 0, yStride: I }),
      K.matmul(b, yu, x, eu, Kk, { idsOff: 0, xStride: 0, yStride: I }),
      K.elementwise(b, EW.swiglu, yg, yg, yu, Kk * I),
      K.matmul(b, yd, yg, ed, Kk, { idsOff: 0, xStride: I, yStride: D }),
    ];
    if (sh) {
      list.push(K.matmul(b, sg, x, sh.gate, 1), K.matmul(b, su, x, sh.up, 1), K.elementwise(b, EW.swiglu, sg, sg, su, sI), K.matmul(b, sy, sg, sh.down, 1));
      if (sgW) list.push(K.matmul(b, sgate, x, sgW, 1));
    }
    list.push(K.moeCombine(b, out, yd, rw, D, Kk, sh ? { y: sy, gate: sgW ? sgate : undefined } : undefined));
    return list;
  });
});
