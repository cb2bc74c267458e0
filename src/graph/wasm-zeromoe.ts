// WASM implementation of the zero-expert MoE (./ops-zeromoe.ts): router product on the kernels, routing
// on the host in float32 as transformers computes it, real experts over their grouped tokens.

import { KernelError } from '../kernels/runtime';
import { sameShape } from './graph';
import { gatedFfn, linear } from './ops';
import { ZERO_MOE, type ZeroMoeSpec } from './ops-zeromoe';
import { WASM_OPS as W } from './wasm';

const f = Math.fround;

/**
 * Routing of one token: ids (ascending expert id among equal choices) and weights into ids/w at o.
 * p = softmax(l) in float32; choice = p + bias; weight = f32(p · scaling).
 */
export function zeroMoeRoute(l: Float32Array, lOff: number, N: number, K: number, bias: Float32Array | null, scaling: number, ids: Int32Array, w: Float32Array, o: number, p: Float64Array): void {
  let m = -Infinity;
  for (let i = 0; i < N; i++) m = Math.max(m, l[lOff + i]);
  let s = 0;
  for (let i = 0; i < N; i++) s += (p[i] = f(Math.exp(f(l[lOff + i] - m))));
  const sf = f(s);
  for (let i = 0; i < N; i++) p[i] = f(p[i] / sf);
  let pv = Infinity, pi = -1;
  for (let j = 0; j < K; j++) {
    let bv = -Infinity, bi = -1;
    for (let i = 0; i < N; i++) {
      const v = bias ? p[i] + bias[i] : p[i];
      if ((v < pv || (v === pv && i > pi)) && (bi < 0 || v > bv)) { bv = v; bi = i; }
    }
    ids[o + j] = bi;
    w[o + j] = f(p[bi] * scaling);
    pv = bv; pi = bi;
  }
}

function badRouting(c: ZeroMoeSpec, t: number): never {
  throw new KernelError('moe', `${c.name}: token ${t} has non-finite router logits`);
}

W.set(ZERO_MOE, (g, a) => {
  const { spec: c, x, y } = a;
  const T = x.rows, D = c.hidden, E = c.nExperts, N = E + c.nZero, K = c.topk, TK = T * K;
  const logits = g.tmp(N, T), xs = g.tmp(D, T), ys = g.tmp(D, T);
  if (g.dry) {
    gatedFfn(g, c.expert(0), c.act, xs, ys);
    return;
  }
  sameShape('moe', x, y);
  if (K < 1 || K > N) throw new KernelError('moe', `${c.name}: top-${K} of ${N} experts`);
  linear(g, logits, x, c.router, c.routerBias || undefined);
  const lv = g.f32(logits);
  const bias = c.bias ? g.k.arena.f32(c.bias, N) : null;
  const host = g.hostInts(TK + E + 1 + TK);
  const ids = host.subarray(0, TK), start = host.subarray(TK, TK + E + 1), order = host.subarray(TK + E + 1, TK + E + 1 + TK);
  const wv = new Float32Array(TK), p = new Float64Array(N);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < N; i++) if (!Number.isFinite(lv[t * N + i])) badRouting(c, t);
    zeroMoeRoute(lv, t * N, N, K, bias, c.routedScaling, ids, wv, t * K, p);
  }
  const ov = g.f32(y), xv = g.f32(x), ysv = g.f32(ys);
  ov.fill(0);
  // Real experts in id order, each over its tokens; zero experts (ids ≥ E) add weight · x, in id order after them.
  start.fill(0);
  for (let i = 0; i < TK; i++) if (ids[i] < E) start[ids[i] + 1]++;
  for (let e = 0; e < E; e++) start[e + 1] += start[e];
  for (let i = 0; i < TK; i++) if (ids[i] < E) order[start[ids[i]]++] = i;
  for (let e = E; e > 0; e--) start[e] = start[e - 1];
  start[0] = 0;
  for (let e = 0; e < E; e++) {
    const s0 = start[e], m = start[e + 1] - s0;
    if (!m) continue;
    if (c.calls) c.calls[e]++;
    for (let j = 0; j < m; j++) g.move(xs.off + j * D * 4, x.off + Math.floor(order[s0 + j] / K) * D * 4, D);
    const xe = { off: xs.off, rows: m, width: D }, ye = { off: ys.off, rows: m, width: D };
    g.scope(`${c.name}.experts.${e}`, () => gatedFfn(g, c.expert(e), c.act, xe, ye));
    for (let j = 0; j < m; j++) {
      const sel = order[s0 + j], o = Math.floor(sel / K) * D, wt = wv[sel];
      for (let d = 0; d < D; d++) ov[o + d] += wt * ysv[j * D + d];
    }
  }
  for (let z = E; z < N; z++) {
    for (let i = 0; i < TK; i++) {
      if (ids[i] !== z) continue;
      const o = Math.floor(i / K) * D, wt = wv[i];
      for (let d = 0; d < D; d++) ov[o + d] += wt * xv[o + d];
    }
  }
});
