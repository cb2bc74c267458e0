// WebGPU implementations of the core ops (src/graph/ops.ts): each records the dispatches of one
// position. Parameters (weights, norm vectors, biases, RoPE tables) are uploaded once, when recorded.

import { ADD_ROW, ATTENTION, BINARY, CAUSAL_CONV, COPY, EMBED, GATED_ACT, KV_APPEND, MATMUL, MOE, NORM, ROPE, UNARY, type GatedWeights } from '../graph/ops';
import { KernelError } from '../kernels/runtime';
import type { Tensor } from '../graph/graph';
import { ATTN_MAX_HEAD_DIM, clamp, decodeAttention, ropeTables, scoresScratch } from './dispatch/attention';
import { ACT_OP, actOp, activation, route } from './dispatch/ffn';
import { GPU_OPS as G, type GpuGraph } from './graph';
import { EW, type Dispatch } from './ops';
// The ops of each layer area register with the core ones.
import './graph-ssm';
import './graph-recurrent';
import './graph-conv';
import './graph-delta';
import './graph-mla';

const n = (t: Tensor) => t.rows * t.width;

function oneRow(g: GpuGraph, op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.rows !== 1) throw new KernelError('webgpu', `${g.label}: ${op} over ${t.rows} rows (the WebGPU recording is of one position)`);
}

G.set(EMBED, (g, a) => {
  const table = g.B.weight(a.table, 'embed');
  g.emit((b) => [g.K.embed(b, a.y.off, table, { scale: a.scale })]);
});

G.set(MATMUL, (g, a) => {
  const w = g.B.weight(a.w, a.w.name ?? `${g.label}.matmul`);
  g.emit((b) => [g.K.matmul(b, a.y.off, a.x.off, w, a.x.rows)]);
});

G.set(ADD_ROW, (g, a) => {
  const bias = g.B.vec(a.bias, a.y.width);
  g.emit((b) => [g.K.elementwise(b, EW.addConst, a.y.off, a.y.off, bias, n(a.y), { period: a.y.width })]);
});

G.set(BINARY, (g, a) => {
  const op = a.op === 'add' ? EW.add : a.op === 'mul' ? EW.mul : EW.mulSigmoid;
  g.emit((b) => [g.K.elementwise(b, op, a.y.off, a.a.off, a.b.off, n(a.y))]);
});

G.set(UNARY, (g, a) => {
  if (a.op === 'clamp') {
    g.emit((b) => [clamp(g.K, b, a.y.off, a.x.off, n(a.y), a.s)]);
    return;
  }
  const op = { scale: EW.scale, softcap: EW.softcap, sigmoid: EW.sigmoid, silu: EW.silu }[a.op];
  g.emit((b) => [g.K.elementwise(b, op, a.y.off, a.x.off, 0, n(a.y), { s: a.s })]);
});

G.set(NORM, (g, a) => {
  const s = a.n, dim = a.dim, rows = a.x.rows * (a.x.width / dim);
  if (s.kind === 'layer') {
    const w = s.w ? g.B.vec(s.w, dim) : -1, bias = s.b ? g.B.vec(s.b, dim) : -1;
    g.emit((b) => [g.K.layerNorm(b, a.y.off, a.x.off, w, bias, rows, dim, s.eps)]);
    return;
  }
  const w = s.w ? g.B.vec(s.w, dim) : -1;
  g.emit((b) => [g.K.rmsNorm(b, a.y.off, a.x.off, w, rows, dim, s.eps, { addOne: s.addOne })]);
});

const CLAMPED = (a: { alpha?: number; limit?: number }) => (a.alpha === undefined ? {} : { alpha: a.alpha, limit: a.limit });

G.set(GATED_ACT, (g, a) => {
  const op = actOp(a.act);
  g.emit((b) => [activation(g.K, b, op, a.y.off, a.gate.off, a.up.off, n(a.y), CLAMPED(a))]);
});

G.set(COPY, (g, a) => {
  g.emit((b) => {
    const list: Dispatch[] = [];
    for (let t = 0; t < a.x.rows; t++) {
      list.push(g.K.copy(b, a.y.off + t * a.y.width + a.yOff, a.x.off + t * a.x.width + a.xOff, a.chunks, a.len, { srcStride: a.xStride, dstStride: a.yStride }));
    }
    return list;
  });
});

G.set(ROPE, (g, a) => {
  oneRow(g, 'rope', a.x);
  const r = a.rope, tables = ropeTables(g.B, r);
  g.emit((b) => [g.K.rope(b, a.x.off, 1, a.nHeads, a.headDim, r.rotaryDim, r.style, tables.cos, tables.sin, a.x.width)]);
});

G.set(KV_APPEND, (g, a) => {
  oneRow(g, 'kv_append', a.x);
  const c = g.state(a.cache), per = a.cache.perToken!;
  g.emit((b) => [g.K.copy(b, c, a.x.off, 1, per, { posStride: per, toState: true })]);
});

G.set(ATTENTION, (g, a) => {
  oneRow(g, 'attention', a.q, a.y);
  if (a.headDim > ATTN_MAX_HEAD_DIM) throw new KernelError('webgpu', `${g.label}: attention headDim ${a.headDim} > ${ATTN_MAX_HEAD_DIM} is not supported on WebGPU (use backend 'wasm')`);
  const L = g.B.maxContext, kc = g.state(a.k), vc = g.state(a.v);
  const scores = scoresScratch(g.B, a.nHeads * L);
  const limit = g.K.gpu.limits.maxStorageBufferBindingSize;
  if (g.B.act.top * 4 > limit) throw new KernelError('webgpu', `${g.label}: attention scratch for ${L} positions exceeds the device's storage binding limit ${limit} (use a shorter maxContext)`);
  const sinks = a.sinks ? g.B.vec(a.sinks, a.nHeads) : undefined;
  g.emit((b) => [decodeAttention(g.K, b, a.y.off, a.q.off, kc, vc, {
    nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, scale: a.scale, scores, maxN: L, window: a.window, softcap: a.softcap, sinks,
  })]);
});

/** Stacked per-expert bias vectors [E, n] as one constant, or undefined when no expert has one. */
function stackedBias(g: GpuGraph, ptrs: (number | undefined)[], len: number): number | undefined {
  if (!ptrs.some((p) => p)) return undefined;
  const all = new Float32Array(ptrs.length * len);
  ptrs.forEach((p, e) => {
    if (p) all.set(g.B.model.k.arena.f32(p, len), e * len);
  });
  return g.B.constant(all);
}

// Routing, expert products and mixing stay on the GPU: the expert ids go through `ids`, so a decode
// step never reads back a routing decision.
G.set(MOE, (g, a) => {
  oneRow(g, 'moe', a.x, a.y);
  const c = a.spec, where = c.name, D = c.hidden;
  const op = actOp(c.act);
  const E = c.nExperts, Kk = c.topk, I = c.inter;
  const B = g.B;
  const router = B.weight(c.router, `${where}.router`);
  const routerBias = c.routerBias ? B.vec(c.routerBias, E) : undefined;
  const rBias = c.routing.bias ? B.vec(c.routing.bias, E) : undefined;
  const experts: GatedWeights[] = Array.from({ length: E }, (_, e) => c.expert(e));
  const eg = B.stack(experts.map((w) => w.gate), `${where}.experts.gate`);
  const eu = B.stack(experts.map((w) => w.up), `${where}.experts.up`);
  const ed = B.stack(experts.map((w) => w.down), `${where}.experts.down`);
  const gb = stackedBias(g, experts.map((w) => w.gateBias), I);
  const ub = stackedBias(g, experts.map((w) => w.upBias), I);
  const db = stackedBias(g, experts.map((w) => w.downBias), D);
  const A = B.act;
  const logits = A.take(E), rw = A.take(Kk), yg = A.take(Kk * I), yu = A.take(Kk * I), yd = A.take(Kk * D);
  let shared: { y: number; gate?: number } | undefined;
  if (c.shared) {
    const sh = c.shared, sy = g.tmp(D);
    const gt = g.tmp(sh.w.gate.rows), up = g.tmp(sh.w.gate.rows);
    const w = { gate: B.weight(sh.w.gate, `${where}.shared.gate`), up: B.weight(sh.w.up, `${where}.shared.up`), down: B.weight(sh.w.down, `${where}.shared.down`) };
    const sgb = sh.w.gateBias ? B.vec(sh.w.gateBias, gt.width) : undefined, sub = sh.w.upBias ? B.vec(sh.w.upBias, gt.width) : undefined;
    const sdb = sh.w.downBias ? B.vec(sh.w.downBias, D) : undefined;
    const sop = actOp(sh.act);
    g.emit((b) => {
      const K = g.K;
      const list = [
        K.matmul(b, gt.off, a.x.off, w.gate, 1), K.matmul(b, up.off, a.x.off, w.up, 1),
        activation(K, b, sop, gt.off, gt.off, up.off, gt.width, { gBias: sgb, uBias: sub }),
        K.matmul(b, sy.off, gt.off, w.down, 1),
      ];
      if (sdb !== undefined) list.push(K.elementwise(b, EW.addConst, sy.off, sy.off, sdb, D));
      return list;
    });
    shared = { y: sy.off };
    if (sh.gate) {
      const sgW = B.weight(sh.gate, `${where}.shared_gate`), sg = A.take(1);
      g.emit((b) => [g.K.matmul(b, sg, a.x.off, sgW, 1)]);
      shared.gate = sg;
    }
  }
  const x = a.x.off, out = a.y.off;
  g.emit((b) => {
    const K = g.K;
    const list = [K.matmul(b, logits, x, router, 1)];
    if (routerBias !== undefined) list.push(K.elementwise(b, EW.addConst, logits, logits, routerBias, E));
    list.push(
      route(K, b, 0, rw, logits, 1, E, Kk, { ...c.routing, bias: rBias }),
      K.matmul(b, yg, x, eg, Kk, { idsOff: 0, xStride: 0, yStride: I }),
      K.matmul(b, yu, x, eu, Kk, { idsOff: 0, xStride: 0, yStride: I }),
      activation(K, b, op, yg, yg, yu, Kk * I, { gBias: gb, uBias: ub, len: I, idsOff: 0, ...CLAMPED(c) }),
      K.matmul(b, yd, yg, ed, Kk, { idsOff: 0, xStride: I, yStride: D }),
    );
    if (db !== undefined) list.push(activation(K, b, ACT_OP.bias, yd, yd, yd, Kk * D, { gBias: db, len: D, idsOff: 0 }));
    list.push(K.moeCombine(b, out, yd, rw, D, Kk, shared));
    return list;
  });
});

G.set(CAUSAL_CONV, (g, a) => {
  oneRow(g, 'causal_conv', a.x, a.y);
  const C = a.x.width;
  const w = g.B.vec(a.w, C * a.W), bias = a.bias ? g.B.vec(a.bias, C) : -1, st = g.state(a.state);
  g.emit((b) => [g.K.conv1d(b, a.x.off, w, st, 1, C, a.W, a.act, { bias, y: a.y.off })]);
});
