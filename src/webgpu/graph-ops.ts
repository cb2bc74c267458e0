// WebGPU implementations of the core ops (src/graph/ops.ts): each records the dispatches of the
// recording's rows (one position, or the T positions of a prompt chunk). Parameters (weights, norm
// vectors, biases, RoPE tables) are uploaded once, when first recorded.

import { ADD_ROW, ATTENTION, BINARY, CAUSAL_CONV, COPY, EMBED, GATED_ACT, gatedFfn, KV_APPEND, MATMUL, matmul, MOE, MUL_ROW, NORM, ROPE, UNARY, type GatedWeights } from '../graph/ops';
import { KernelError } from '../kernels/runtime';
import { sameShape, type Tensor } from '../graph/graph';
import { ATTN_MAX_HEAD_DIM, clamp, decodeAttention, kvQuantize, ropeTables } from './dispatch/attention';
import { ACT_OP, actOp, activation, route } from './dispatch/ffn';
import { questAppend, questDecode, questScratchFloats } from './dispatch/quest';
import { GPU_OPS as G, type GpuGraph } from './graph';
import { EW, TOKENS_BASE, type Dispatch, type GpuBufs } from './ops';
// The ops of each layer area register with the core ones.
import './graph-ssm';
import './graph-recurrent';
import './graph-conv';
import './graph-delta';
import './graph-mla';
import './graph-rwkv7';
import './graph-mlstm';
import './graph-dma';
import './graph-bitnet';
import './graph-zeromoe';

const n = (t: Tensor) => t.rows * t.width;

/** Floats of attention score scratch one dispatch may use: a pass's query rows are split into dispatches of at most this many. */
const SCORE_FLOATS = 1 << 22;

function sameRows(g: GpuGraph, op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.rows !== ts[0].rows) throw new KernelError('webgpu', `${g.label}: ${op} over tensors of ${t.rows} and ${ts[0].rows} rows`);
}

G.set(EMBED, (g, a) => {
  const table = g.B.weight(a.table, 'embed');
  g.emit((b) => [g.K.embed(b, a.y.off, table, { scale: a.scale, T: a.y.rows })]);
});

G.set(MATMUL, (g, a) => {
  sameRows(g, 'matmul', a.x, a.y);
  const w = g.B.weight(a.w, a.w.name ?? `${g.label}.matmul`);
  const need = g.K.gemmPlan(w.rows, w.cols, a.x.rows, true)?.scratch ?? 0;
  const scratch = need > 0 ? g.scratch('gemm-split', need) : -1;
  g.emit((b) => g.K.product(b, a.y.off, a.x.off, w, a.x.rows, scratch, { xStride: a.x.width, yStride: a.y.width }));
});

G.set(ADD_ROW, (g, a) => {
  const bias = g.B.vec(a.bias, a.y.width);
  g.emit((b) => [g.K.elementwise(b, EW.addConst, a.y.off, a.y.off, bias, n(a.y), { period: a.y.width })]);
});

G.set(MUL_ROW, (g, a) => {
  const v = g.B.vec(a.v, a.y.width);
  g.emit((b) => [g.K.elementwise(b, EW.mulConst, a.y.off, a.y.off, v, n(a.y), { period: a.y.width })]);
});

/** Two dispatches writing 1.0 into n floats at y: y = 0·src (src: finite floats), then y + c[one]. */
function ones(g: GpuGraph, b: GpuBufs, y: number, src: number, nf: number, one: number): Dispatch[] {
  return [g.K.elementwise(b, EW.scale, y, src, 0, nf, { s: 0 }), g.K.elementwise(b, EW.addConst, y, y, one, nf, { period: 1 })];
}

G.set(BINARY, (g, a) => {
  const op = a.op === 'add' ? EW.add : a.op === 'mul' ? EW.mul : EW.mulSigmoid;
  g.emit((b) => [g.K.elementwise(b, op, a.y.off, a.a.off, a.b.off, n(a.y))]);
});

G.set(UNARY, (g, a) => {
  if (a.op === 'relu2') {
    // relu²(x)·1 through the gated-activation kernel, with a row of ones as its up input.
    const u = g.tmp(a.x.width, a.x.rows).off, one = g.B.constant(new Float32Array([1]));
    g.emit((b) => [...ones(g, b, u, a.x.off, n(a.x), one), activation(g.K, b, ACT_OP.relu2glu, a.y.off, a.x.off, u, n(a.y))]);
    return;
  }
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
  sameRows(g, 'copy', a.x, a.y);
  g.emit((b) => [g.K.copy(b, a.y.off + a.yOff, a.x.off + a.xOff, a.chunks, a.len, {
    srcStride: a.xStride, dstStride: a.yStride, rows: a.x.rows, srcRow: a.x.width, dstRow: a.y.width,
  })]);
});

G.set(ROPE, (g, a) => {
  const r = a.rope, tables = ropeTables(g.B, r);
  g.emit((b) => [g.K.rope(b, a.x.off, a.x.rows, a.nHeads, a.headDim, r.rotaryDim, r.style, tables.cos, tables.sin, a.x.width)]);
});

// Row t goes to the cache row of position step.pos + t (a quantized cache's row as its blocks).
G.set(KV_APPEND, (g, a) => {
  const c = g.state(a.cache), per = a.cache.perToken!, qc = a.cache.quant;
  if (qc) {
    g.emit((b) => [kvQuantize(g.K, b, qc.type, c, a.x.off, { heads: qc.heads, dim: qc.dim, rows: a.x.rows, xRow: a.x.width, rowWords: per })]);
    return;
  }
  g.emit((b) => [g.K.copy(b, c, a.x.off, 1, per, { posStride: per, toState: true, rows: a.x.rows, srcRow: a.x.width, dstRow: per })]);
});

// Query row t (position step.pos + t) attends positions 0 … step.pos + t; the cache already holds
// every row of the pass. Rows share one score scratch, so a pass of many rows runs as several
// dispatches of at most SCORE_FLOATS scratch floats each.
// Sparse top-k (a.pages): every pass folds its keys into the page bounds; a one-row pass runs the
// Quest dispatches (dispatch/quest.ts), which attend densely while the context is within the budget
// and on the rows of a prompt fed position by position (step.prompt).
G.set(ATTENTION, (g, a) => {
  sameRows(g, 'attention', a.q, a.y);
  if (a.headDim > ATTN_MAX_HEAD_DIM) throw new KernelError('webgpu', `${g.label}: attention headDim ${a.headDim} > ${ATTN_MAX_HEAD_DIM} is not supported on WebGPU (use backend 'wasm')`);
  if (a.bidirectional) throw new KernelError('webgpu', `${g.label}: bidirectional attention has no WebGPU path yet (use backend 'wasm')`);
  const L = g.B.maxContext, kc = g.state(a.k), vc = g.state(a.v), T = a.q.rows;
  const pg = a.pages;
  if (pg) {
    if (a.k.kind === 'ring') throw new KernelError('webgpu', `${g.label}: sparse top-k attention needs a linear cache`);
    const shape = { nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, pageSize: pg.pageSize, pages: pg.pages, sinks: pg.sinks, window: pg.window, maxPages: pg.maxPages };
    if (pg.keys.rows !== T || pg.keys.width !== a.nKv * a.headDim) throw new KernelError('webgpu', `${g.label}: page keys ${pg.keys.rows}×${pg.keys.width}, expected ${T}×${a.nKv * a.headDim}`);
    const bounds = g.state(pg.bounds);
    g.emit((b) => [questAppend(g.K, b, bounds, pg.keys.off, T, pg.keys.width, shape)]);
    if (T === 1) {
      const scratch = g.tmp(questScratchFloats(shape), 1).off;
      const scores = g.scratch('attention scores', a.nHeads * L);
      g.checkActivations(`attention scratch for ${L} positions`);
      const sinkLogits = a.sinks ? g.B.vec(a.sinks, a.nHeads) : undefined;
      const quant = a.k.quant ? { cache: a.k.quant.type, kStride: a.k.perToken!, vStride: a.v.perToken! } : {};
      g.emit((b) => questDecode(g.K, b, a.y.off, a.q.off, kc, vc, bounds, scratch, { ...shape, scale: a.scale, scores, maxN: L, softcap: a.softcap, sinkLogits, ...quant }));
      return;
    }
  }
  const per = Math.max(1, Math.min(T, Math.floor(SCORE_FLOATS / (a.nHeads * L))));
  const scores = g.scratch('attention scores', per * a.nHeads * L);
  g.checkActivations(`attention scratch for ${L} positions`);
  const sinks = a.sinks ? g.B.vec(a.sinks, a.nHeads) : undefined;
  g.emit((b) => {
    const list: Dispatch[] = [];
    for (let r0 = 0; r0 < T; r0 += per) {
      list.push(decodeAttention(g.K, b, a.y.off + r0 * a.y.width, a.q.off + r0 * a.q.width, kc, vc, {
        nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, scale: a.scale, scores, maxN: L, window: a.window, softcap: a.softcap, sinks,
        rows: Math.min(per, T - r0), row0: r0, qRowStride: a.q.width, oRowStride: a.y.width,
        ...(a.k.quant ? { cache: a.k.quant.type, kStride: a.k.perToken!, vStride: a.v.perToken! } : {}),
      }));
    }
    return list;
  });
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
// step never reads back a routing decision. A pass of T rows routes them together (K expert slots
// per row, slot j of row t reading x row t), in groups of rows whose ids fit below TOKENS_BASE.
G.set(MOE, (g, a) => {
  sameShape('moe', a.x, a.y);
  const c = a.spec, where = c.name, D = c.hidden;
  if (a.route) sameShape('moe', a.route, a.x);
  const op = actOp(c.act);
  const E = c.nExperts, Kk = c.topk, I = c.inter;
  const B = g.B, T = a.x.rows;
  const router = B.weight(c.router, `${where}.router`);
  const routerBias = c.routerBias ? B.vec(c.routerBias, E) : undefined;
  const rBias = c.routing.bias ? B.vec(c.routing.bias, E) : undefined;
  const eScale = c.expertScale ? B.vec(c.expertScale, E) : undefined;
  const experts: GatedWeights[] = Array.from({ length: E }, (_, e) => c.expert(e));
  // Non-gated experts (c.ungated): act(up·x)·1, the up product in the activation's gate input.
  const ungated = c.ungated ?? false;
  if (ungated && c.act !== 'relu2' && c.act !== 'silu') throw new KernelError('webgpu', `${where}: non-gated experts take relu2 or silu, not ${c.act}`);
  const one = ungated ? B.constant(new Float32Array([1])) : 0;
  const eg = ungated ? null : B.stack(experts.map((w) => w.gate), `${where}.experts.gate`);
  const eu = B.stack(experts.map((w) => w.up), `${where}.experts.up`);
  const ed = B.stack(experts.map((w) => w.down), `${where}.experts.down`);
  const gb = stackedBias(g, experts.map((w) => w.gateBias), I);
  const ub = stackedBias(g, experts.map((w) => w.upBias), I);
  const db = stackedBias(g, experts.map((w) => w.downBias), D);
  const R = Math.max(1, Math.min(T, Math.floor(TOKENS_BASE / Kk)));
  // A pass of several rows takes the matmul kernel of one invocation per output.
  const perOutput = T > 1;
  const logits = g.tmp(E, R).off, rw = g.tmp(Kk, R).off, yg = g.tmp(Kk * I, R).off, yu = g.tmp(Kk * I, R).off, yd = g.tmp(Kk * D, R).off;
  // The shared expert runs over every row through the core ops, before the routed experts.
  let shared: { y: number; gate?: number } | undefined;
  if (c.shared) {
    const sy = g.tmp(D, T);
    gatedFfn(g, c.shared.w, c.shared.act, a.x, sy);
    shared = { y: sy.off };
    if (c.shared.gate) {
      const sg = g.tmp(1, T);
      matmul(g, sg, a.x, c.shared.gate);
      shared.gate = sg.off;
    }
  }
  g.emit((b) => {
    const K = g.K, list: Dispatch[] = [];
    for (let r0 = 0; r0 < T; r0 += R) {
      const rows = Math.min(R, T - r0), x = a.x.off + r0 * D, out = a.y.off + r0 * D, slots = rows * Kk;
      // The router reads `route` rows where given (the same row count and width as x).
      const rx = a.route ? a.route.off + r0 * D : x;
      list.push(K.matmul(b, logits, rx, router, rows, { xStride: D, perOutput }));
      if (routerBias !== undefined) list.push(K.elementwise(b, EW.addConst, logits, logits, routerBias, rows * E, { period: E }));
      list.push(route(K, b, 0, rw, logits, rows, E, Kk, { ...c.routing, bias: rBias, expertScale: eScale }));
      if (eg) {
        list.push(
          K.matmul(b, yg, x, eg, slots, { idsOff: 0, xStride: D, xDiv: Kk, yStride: I, perOutput }),
          K.matmul(b, yu, x, eu, slots, { idsOff: 0, xStride: D, xDiv: Kk, yStride: I, perOutput }),
          activation(K, b, op, yg, yg, yu, slots * I, { gBias: gb, uBias: ub, len: I, idsOff: 0, ...CLAMPED(c) }),
        );
      } else {
        list.push(
          K.matmul(b, yu, x, eu, slots, { idsOff: 0, xStride: D, xDiv: Kk, yStride: I, perOutput }),
          ...ones(g, b, yg, yu, slots * I, one),
          activation(K, b, op, yg, yu, yg, slots * I, { gBias: ub, len: I, idsOff: 0 }),
        );
      }
      list.push(K.matmul(b, yd, yg, ed, slots, { idsOff: 0, xStride: I, yStride: D, perOutput }));
      if (db !== undefined) list.push(activation(K, b, ACT_OP.bias, yd, yd, yd, slots * D, { gBias: db, len: D, idsOff: 0 }));
      const sh = shared && { y: shared.y + r0 * D, gate: shared.gate === undefined ? undefined : shared.gate + r0 };
      list.push(K.moeCombine(b, out, yd, rw, D, Kk, sh, rows));
    }
    return list;
  });
});

G.set(CAUSAL_CONV, (g, a) => {
  sameRows(g, 'causal_conv', a.x, a.y);
  const C = a.x.width;
  const w = g.B.vec(a.w, C * a.W), bias = a.bias ? g.B.vec(a.bias, C) : -1, st = g.state(a.state);
  g.emit((b) => [g.K.conv1d(b, a.x.off, w, st, a.x.rows, C, a.W, a.act, { bias, y: a.y.off, xStride: a.x.width, yStride: a.y.width })]);
});
