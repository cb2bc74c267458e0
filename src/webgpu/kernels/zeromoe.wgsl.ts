// The zero-expert MoE (src/graph/ops-zeromoe.ts) on the GPU.
//
// router, one 64-wide workgroup per token t: p = softmax(logits[t]) over N experts; top K of p + bias
// (hasBias; ties to the lowest id); weight = p · scaling. A pick of a real expert (id < E) writes its id
// and weight to its slot; a pick of a zero expert writes id 0 and weight 0 to its slot (the slot's FFN
// output is then ignored) and adds its weight to zw[t].
//
// combine, per token t (grid y): out[t, d] = Σ_j w[t, j] · y[t·K + j, d] + zw[t] · x[t, d].

import { kernelSource, reductions } from './common.wgsl';

export const ZERO_ROUTER_PARAMS = ['N', 'E', 'K', 'logitsOff', 'wOff', 'zwOff', 'idsOff', 'biasOff', 'hasBias', 'scaling:f'];
export const zeroRouterWgsl = kernelSource(ZERO_ROUTER_PARAMS, ['p', 'a', 'c', 'ids'], `
var<workgroup> rv: array<f32, 64>;
var<workgroup> ri: array<i32, 64>;
var<workgroup> sel: array<i32, 64>;
${reductions(64)}
// Strictly after the previous pick (pv, pi) in (value desc, index asc) order; pi < 0: no pick yet.
fn after(v: f32, i: i32, pv: f32, pi: i32) -> bool { return pi < 0 || v < pv || (v == pv && i > pi); }
fn best(v: f32, i: i32, li: u32) {
  workgroupBarrier();
  rv[li] = v;
  ri[li] = i;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (li < s) {
      let ov = rv[li + s];
      let oi = ri[li + s];
      if (oi >= 0 && (ri[li] < 0 || ov > rv[li] || (ov == rv[li] && oi < ri[li]))) { rv[li] = ov; ri[li] = oi; }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = wg.x;
  let lb = p.logitsOff + t * p.N;
  var m = -3.4e38;
  for (var i = li; i < p.N; i += 64u) { m = max(m, a[lb + i]); }
  m = wmax(m, li);
  var part = 0.0;
  for (var i = li; i < p.N; i += 64u) { part += exp(a[lb + i] - m); }
  let s = wsum(part, li);
  var pv = 0.0;
  var pi = -1;
  for (var j = 0u; j < p.K; j++) {
    var cv = 0.0;
    var ci = -1;
    for (var i = li; i < p.N; i += 64u) {
      var v = exp(a[lb + i] - m) / s;
      if (p.hasBias != 0u) { v += c[p.biasOff + i]; }
      if (after(v, i32(i), pv, pi) && (ci < 0 || v > cv)) { cv = v; ci = i32(i); }
    }
    best(cv, ci, li);
    pv = rv[0];
    pi = ri[0];
    if (li == 0u) { sel[j] = pi; }
  }
  workgroupBarrier();
  if (li != 0u) { return; }
  let ob = t * p.K;
  var zw = 0.0;
  for (var j = 0u; j < p.K; j++) {
    let e = u32(sel[j]);
    let w = (exp(a[lb + e] - m) / s) * p.scaling;
    if (e >= p.E) {
      zw += w;
      ids[p.idsOff + ob + j] = 0u;
      a[p.wOff + ob + j] = 0.0;
    } else {
      ids[p.idsOff + ob + j] = e;
      a[p.wOff + ob + j] = w;
    }
  }
  a[p.zwOff + t] = zw;
}
`);

export const ZERO_COMBINE_PARAMS = ['D', 'K', 'yOff', 'wOff', 'zwOff', 'xOff', 'outOff'];
export const zeroCombineWgsl = kernelSource(ZERO_COMBINE_PARAMS, ['p', 'a'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let t = gid.y;
  if (d >= p.D) { return; }
  var acc = 0.0;
  for (var j = 0u; j < p.K; j++) { acc += a[p.wOff + t * p.K + j] * a[p.yOff + (t * p.K + j) * p.D + d]; }
  acc += a[p.zwOff + t] * a[p.xOff + t * p.D + d];
  a[p.outOff + t * p.D + d] = acc;
}
`);
