// WASM implementations of the core ops (ops.ts) on the kernels of src/kernels. Ops check g.dry
// after allocating their temporaries, so the planning pass sees every allocation and runs nothing.

import { add, geglu, mul, relu2, scale, sigmoid, silu, softcap, swiglu } from '../kernels/act';
import { attention, questAppendKeys, questAttend, questScratchBytes } from '../kernels/attention';
import { quantizeKvRows } from '../kernels/kvcache';
import { conv1d } from '../kernels/conv';
import { route } from '../kernels/moe';
import { embedRows, matmul } from '../kernels/matmul';
import { layerNorm, rmsNorm } from '../kernels/norm';
import { rope } from '../kernels/rope';
import { KernelError } from '../kernels/runtime';
import { sameShape, type Graph, type Tensor } from './graph';
import { ADD_ROW, ATTENTION, BINARY, CAUSAL_CONV, COPY, EMBED, GATED_ACT, gatedFfn, KV_APPEND, linear, MATMUL, MOE, MUL_ROW, NORM, ROPE, UNARY, ungatedFfn, type GatedWeights, type MoeSpec, type UngatedAct } from './ops';
import { WASM_OPS as W } from './wasm';
// The ops of each layer area register with the core ones.
import './wasm-ssm';
import './wasm-recurrent';
import './wasm-conv';
import './wasm-delta';
import './wasm-mla';
import './wasm-rwkv7';
import './wasm-mlstm';
import './wasm-dma';
import './wasm-bitnet';
import './wasm-diffusion';
import './wasm-zeromoe';

const n = (t: Tensor) => t.rows * t.width;

W.set(EMBED, (g, a) => {
  if (g.dry) return;
  embedRows(g.k, a.y.off, a.table, g.ids, a.scale);
});

W.set(MATMUL, (g, a) => {
  if (g.dry) return;
  if (a.x.rows !== a.y.rows || a.x.width !== a.w.cols || a.y.width !== a.w.rows) {
    throw new KernelError('matmul', `${g.label}: ${a.y.rows}×${a.y.width} = ${a.x.rows}×${a.x.width} · (${a.w.rows}×${a.w.cols})ᵀ`);
  }
  matmul(g.k, a.y.off, a.x.off, a.w, a.x.rows, g.matmulOpts);
});

W.set(ADD_ROW, (g, a) => {
  if (g.dry) return;
  const { rows, width } = a.y;
  const b = g.k.arena.f32(a.bias, width), v = g.f32(a.y);
  for (let t = 0; t < rows; t++) for (let i = 0; i < width; i++) v[t * width + i] += b[i];
});

W.set(MUL_ROW, (g, a) => {
  if (g.dry) return;
  const { rows, width } = a.y;
  const m = g.k.arena.f32(a.v, width), v = g.f32(a.y);
  for (let t = 0; t < rows; t++) for (let i = 0; i < width; i++) v[t * width + i] *= m[i];
});

W.set(BINARY, (g, a) => {
  const tmp = a.op === 'mul_sigmoid' ? g.tmp(a.b.width, a.b.rows) : null;
  if (g.dry) return;
  sameShape(a.op, a.y, a.a, a.b);
  const k = g.k, len = n(a.y);
  if (a.op === 'add') add(k, a.y.off, a.a.off, a.b.off, len);
  else if (a.op === 'mul') mul(k, a.y.off, a.a.off, a.b.off, len);
  else {
    sigmoid(k, tmp!.off, a.b.off, len);
    mul(k, a.y.off, a.a.off, tmp!.off, len);
  }
});

W.set(UNARY, (g, a) => {
  if (g.dry) return;
  sameShape(a.op, a.y, a.x);
  const k = g.k, len = n(a.y);
  switch (a.op) {
    case 'scale': scale(k, a.y.off, a.x.off, a.s, len); return;
    case 'softcap': softcap(k, a.y.off, a.x.off, a.s, len); return;
    case 'sigmoid': sigmoid(k, a.y.off, a.x.off, len); return;
    case 'silu': silu(k, a.y.off, a.x.off, len); return;
    case 'relu2': relu2(k, a.y.off, a.x.off, len); return;
    case 'clamp': {
      const x = g.f32(a.x), y = g.f32(a.y), c = a.s;
      for (let i = 0; i < len; i++) y[i] = Math.min(Math.max(x[i], -c), c);
    }
  }
});

W.set(NORM, (g, a) => {
  if (g.dry) return;
  sameShape('norm', a.y, a.x);
  const { n: s, dim } = a;
  if (a.x.width % dim) throw new KernelError('norm', `${g.label}: width ${a.x.width} is not a multiple of ${dim}`);
  const rows = a.x.rows * (a.x.width / dim);
  if (s.kind === 'layer') layerNorm(g.k, a.y.off, a.x.off, s.w, s.b ?? 0, rows, dim, s.eps);
  else rmsNorm(g.k, a.y.off, a.x.off, s.w, rows, dim, s.eps, { addOne: s.addOne });
});

W.set(GATED_ACT, (g, a) => {
  if (g.dry) return;
  sameShape(a.act, a.y, a.gate, a.up);
  const k = g.k, len = n(a.y), y = a.y.off, gt = a.gate.off, u = a.up.off;
  switch (a.act) {
    case 'silu': swiglu(k, y, gt, u, len); return;
    case 'gelu_tanh': geglu(k, y, gt, u, len, 'tanh'); return;
    case 'gelu': geglu(k, y, gt, u, len, 'none'); return;
    case 'relu2': relu2(k, y, gt, len); mul(k, y, y, u, len); return;
    case 'clamped_swiglu': {
      const alpha = a.alpha!, limit = a.limit!;
      const gv = g.f32(a.gate), uv = g.f32(a.up), yv = g.f32(a.y);
      for (let i = 0; i < len; i++) {
        const gate = Math.min(gv[i], limit);
        const up = Math.min(Math.max(uv[i], -limit), limit);
        yv[i] = (up + 1) * (gate / (1 + Math.exp(-alpha * gate)));
      }
    }
  }
});

W.set(COPY, (g, a) => {
  if (g.dry) return;
  if (a.x.rows !== a.y.rows) throw new KernelError('copy', `${g.label}: ${a.x.rows} rows to ${a.y.rows}`);
  if (a.xOff + (a.chunks - 1) * a.xStride + a.len > a.x.width || a.yOff + (a.chunks - 1) * a.yStride + a.len > a.y.width) {
    throw new KernelError('copy', `${g.label}: ${a.chunks} runs of ${a.len} outside a row (${a.x.width} → ${a.y.width})`);
  }
  for (let t = 0; t < a.x.rows; t++) {
    for (let c = 0; c < a.chunks; c++) {
      g.move(a.y.off + (t * a.y.width + a.yOff + c * a.yStride) * 4, a.x.off + (t * a.x.width + a.xOff + c * a.xStride) * 4, a.len);
    }
  }
});

W.set(ROPE, (g, a) => {
  const r = a.rope;
  const inv = g.constant(r, r.invFreq);
  if (g.dry) return;
  if (a.x.width < a.nHeads * a.headDim) throw new KernelError('rope', `${g.label}: ${a.nHeads} heads of ${a.headDim} in rows of ${a.x.width}`);
  if (a.x.rows !== g.T) throw new KernelError('rope', `${g.label}: ${a.x.rows} rows for ${g.T} positions`);
  rope(g.k, a.x.off, a.x.rows, a.nHeads, a.headDim, g.positions, inv, r.rotaryDim, r.style, r.attentionFactor, a.headDim, a.x.width);
});

/** Slots of a cache region: a ring of `capacity` positions, or one per position. */
function slotsOf(cache: { kind: string; capacity?: number }): number {
  return cache.kind === 'ring' ? cache.capacity! : Infinity;
}

// A quantized cache takes each row as its blocks (runs of consecutive slots in one kernel call).
W.set(KV_APPEND, (g, a) => {
  if (g.dry) return;
  const per = a.cache.perToken!, qc = a.cache.quant;
  const width = qc ? qc.heads * qc.dim : per;
  if (a.x.width !== width || a.x.rows !== g.T) throw new KernelError('kv_append', `${g.label}: ${a.x.rows}×${a.x.width} into a cache of ${width} per position`);
  const cap = slotsOf(a.cache), L = a.cache.kind === 'ring' ? cap : g.pos0 + g.T;
  const base = g.state(a.cache);
  for (let t = 0; t < g.T;) {
    const p = g.pos0 + t, slot = cap === Infinity ? p : p % cap;
    if (slot >= L) throw new KernelError('kv_append', `${g.label}: position ${p} past the cache's ${L} slots`);
    if (!qc) {
      g.move(base + slot * per * 4, a.x.off + t * per * 4, per);
      t++;
      continue;
    }
    const run = Math.min(g.T - t, L - slot);
    quantizeKvRows(g.k, qc.type, base + slot * per * 4, a.x.off + t * width * 4, run, qc.heads, qc.dim, { dstStride: per * 4 });
    t += run;
  }
});

W.set(ATTENTION, (g, a) => {
  const pg = a.pages;
  const scratch = pg ? g.tmp(questScratchBytes({ nKv: a.nKv, maxPages: pg.maxPages, pages: pg.pages, pageSize: pg.pageSize, sinkPositions: pg.sinks, window: pg.window }) / 4, 1) : null;
  if (g.dry) return;
  const cap = a.k.kind === 'ring' ? a.k.capacity! : 0;
  const q = a.k.quant;
  if (pg) {
    // Sparse top-k: page bounds follow every append; a one-token step (not a prompt chunk) attends the chosen pages.
    if (cap) throw new KernelError('attention', `${g.label}: sparse top-k attention needs a linear cache`);
    const W = a.nKv * a.headDim;
    if (pg.keys.width !== W || pg.keys.rows !== g.T) throw new KernelError('attention', `${g.label}: page keys ${pg.keys.rows}×${pg.keys.width}, expected ${g.T}×${W}`);
    const kMin = g.state(pg.bounds), kMax = kMin + 4 * pg.maxPages * W;
    questAppendKeys(g.k, kMin, kMax, pg.keys.off, g.T, g.pos0, pg.pageSize, pg.maxPages, a.nKv, a.headDim);
    if (g.T === 1 && !g.prompt) {
      questAttend(g.k, a.y.off, a.q.off, g.state(a.k), g.state(a.v), kMin, kMax, scratch!.off, {
        pos: g.pos0, nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, scale: a.scale, softcap: a.softcap, sinks: a.sinks || undefined,
        pageSize: pg.pageSize, pages: pg.pages, sinkPositions: pg.sinks, window: pg.window, maxPages: pg.maxPages,
        ...(q ? { cache: q.type, kStride: a.k.perToken! * 4, vStride: a.v.perToken! * 4 } : {}),
      });
      return;
    }
  }
  if (a.bidirectional) {
    // Each row attends as the pass's last position does, over a window widened by the rows after its start.
    if (pg) throw new KernelError('attention', `${g.label}: bidirectional attention is dense only`);
    if (a.q.rows !== g.T) throw new KernelError('attention', `${g.label}: bidirectional attention over ${a.q.rows} rows of a ${g.T}-token pass`);
    const qb = a.nHeads * a.headDim * 4, yb = a.nHeads * a.vDim * 4;
    for (let t = 0; t < g.T; t++) {
      attention(g.k, a.y.off + t * yb, a.q.off + t * qb, g.state(a.k), g.state(a.v), {
        T: 1, qPos0: g.pos0 + g.T - 1, nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, scale: a.scale,
        window: a.window ? a.window + g.T - 1 : undefined, softcap: a.softcap, sinks: a.sinks || undefined, capacity: cap || undefined,
        ...(q ? { cache: q.type, kStride: a.k.perToken! * 4, vStride: a.v.perToken! * 4 } : {}),
      });
    }
    return;
  }
  attention(g.k, a.y.off, a.q.off, g.state(a.k), g.state(a.v), {
    T: g.T, qPos0: g.pos0, nHeads: a.nHeads, nKv: a.nKv, headDim: a.headDim, vDim: a.vDim, scale: a.scale,
    window: a.window, softcap: a.softcap, sinks: a.sinks || undefined, capacity: cap || undefined,
    ...(q ? { cache: q.type, kStride: a.k.perToken! * 4, vStride: a.v.perToken! * 4 } : {}),
  });
});

/** The error for routing that picked no valid expert: non-finite router logits, named with the layer. */
function badRouting(spec: MoeSpec, lv: Float32Array, t: number): never {
  const E = spec.nExperts;
  let bad = -1;
  for (let i = 0; i < lv.length && bad < 0; i++) if (!Number.isFinite(lv[i])) bad = i;
  const detail = bad >= 0
    ? `router logit ${bad % E} of token ${Math.floor(bad / E)} is ${lv[bad]}: the weights or the activations reaching this layer are not finite (NaN or infinite values in the checkpoint?)`
    : `token ${t} was routed to no valid expert`;
  throw new KernelError('moe', `${spec.name}: ${detail}`);
}

/** One routed expert's feed-forward: gated, or down(act(up·x)) for non-gated experts. */
function expertFfn(g: Graph, c: MoeSpec, w: GatedWeights, x: Tensor, y: Tensor, opts: { alpha?: number; limit?: number }): void {
  if (c.ungated) ungatedFfn(g, w, c.act as UngatedAct, x, y);
  else gatedFfn(g, w, c.act, x, y, opts);
}

/** Per MoE layer: scope labels and expert-FFN options, made once. */
interface MoeHost {
  labels: string[];
  shared: string;
  opts: { alpha?: number; limit?: number };
}
const moeHosts = new WeakMap<MoeSpec, MoeHost>();
function moeHost(c: MoeSpec): MoeHost {
  let h = moeHosts.get(c);
  if (!h) {
    h = { labels: Array.from({ length: c.nExperts }, (_, e) => `${c.name}.experts.${e}`), shared: `${c.name}.shared`, opts: { alpha: c.alpha, limit: c.limit } };
    if (c.ungated && c.act !== 'relu2' && c.act !== 'silu') throw new KernelError('moe', `${c.name}: non-gated experts take relu2 or silu, not ${c.act}`);
    moeHosts.set(c, h);
  }
  return h;
}

// Tokens are grouped per expert, so each selected expert's weights stream once per chunk.
W.set(MOE, (g, a) => {
  const { spec: c, x, y } = a;
  const T = x.rows, D = c.hidden, E = c.nExperts, K = c.topk, TK = T * K;
  const logits = g.tmp(E, T), ids = g.tmp(K, T), w = g.tmp(K, T);
  const xs = g.tmp(D, T), ys = g.tmp(D, T);
  const h = moeHost(c);
  if (g.dry) {
    // The planning pass: the largest expert batch is every token of the chunk.
    expertFfn(g, c, c.expert(0), xs, ys, h.opts);
    if (c.shared) {
      gatedFfn(g, c.shared.w, c.shared.act, x, ys);
      if (c.shared.gate) g.tmp(1, T);
    }
    return;
  }
  const k = g.k;
  if (a.route) sameShape('moe', a.route, x);
  linear(g, logits, a.route ?? x, c.router, c.routerBias);
  // Top-k passes over NaN scores silently; non-finite router logits are an error, not a routing.
  const lv = g.f32(logits);
  for (let i = 0; i < T * E; i++) if (!Number.isFinite(lv[i])) badRouting(c, lv, Math.floor(i / E));
  route(k, ids.off, w.off, logits.off, T, E, K, c.routing);
  // ids and weights stay in this op's temporaries; the expert FFNs allocate above them.
  const idv = g.i32(ids), wv = g.f32(w);
  for (let i = 0; i < TK; i++) {
    if (!(idv[i] >= 0 && idv[i] < E) || !Number.isFinite(wv[i])) badRouting(c, lv, Math.floor(i / K));
  }
  if (c.expertScale) {
    const es = k.arena.f32(c.expertScale, E);
    for (let i = 0; i < TK; i++) wv[i] *= es[idv[i]];
  }
  // Counting sort of the T·K selections by expert: order[start[e] … start[e + 1]) are expert e's.
  const host = g.hostInts(E + 1 + TK), start = host.subarray(0, E + 1), order = host.subarray(E + 1, E + 1 + TK);
  start.fill(0);
  for (let i = 0; i < TK; i++) start[idv[i] + 1]++;
  for (let e = 0; e < E; e++) start[e + 1] += start[e];
  for (let i = 0; i < TK; i++) order[start[idv[i]]++] = i;
  for (let e = E; e > 0; e--) start[e] = start[e - 1];
  start[0] = 0;
  const ov = g.f32(y), ysv = g.f32(ys);
  ov.fill(0);
  for (let e = 0; e < E; e++) {
    const s0 = start[e], m = start[e + 1] - s0;
    if (!m) continue;
    if (c.calls) c.calls[e]++;
    for (let j = 0; j < m; j++) g.move(xs.off + j * D * 4, x.off + Math.floor(order[s0 + j] / K) * D * 4, D);
    const xe = { off: xs.off, rows: m, width: D }, ye = { off: ys.off, rows: m, width: D };
    g.scope(h.labels[e], () => expertFfn(g, c, c.expert(e), xe, ye, h.opts));
    for (let j = 0; j < m; j++) {
      const sel = order[s0 + j], o = Math.floor(sel / K) * D, wt = wv[sel];
      for (let d = 0; d < D; d++) ov[o + d] += wt * ysv[j * D + d];
    }
  }
  if (c.shared) {
    const sh = c.shared;
    g.scope(h.shared, () => gatedFfn(g, sh.w, sh.act, x, ys));
    if (sh.gate) {
      const sg = g.tmp(1, T);
      matmul(k, sg.off, x.off, sh.gate, T, g.matmulOpts);
      const gv = g.f32(sg);
      for (let t = 0; t < T; t++) {
        const gt = 1 / (1 + Math.exp(-gv[t]));
        for (let d = 0; d < D; d++) ov[t * D + d] += gt * ysv[t * D + d];
      }
    } else {
      for (let i = 0; i < T * D; i++) ov[i] += ysv[i];
    }
  }
});

W.set(CAUSAL_CONV, (g, a) => {
  if (g.dry) return;
  sameShape('causal_conv', a.y, a.x);
  if (a.x.rows !== g.T) throw new KernelError('causal_conv', `${g.label}: ${a.x.rows} rows for the ${g.T} tokens of the pass`);
  conv1d(g.k, a.y.off, a.x.off, a.w, a.bias, g.state(a.state), a.x.rows, a.x.width, a.W, a.act);
});
