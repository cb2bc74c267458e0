// MoE routing and mixing on the GPU, so that a decode step never reads back routing decisions.
//
// combine, per token t (grid y): out[t, d] = Σ_j w[t, j] · y[t·K + j, d]  (+ s(sg[t]) · shared[t, d],
// s = sigmoid when hasGate).

import { kernelSource } from './common.wgsl';

export const COMBINE_PARAMS = ['D', 'K', 'yOff', 'wOff', 'outOff', 'shOff', 'sgOff', 'hasShared', 'hasGate'];
export const combineWgsl = kernelSource(COMBINE_PARAMS, ['p', 'a'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let t = gid.y;
  if (d >= p.D) { return; }
  var acc = 0.0;
  for (var j = 0u; j < p.K; j++) { acc += a[p.wOff + t * p.K + j] * a[p.yOff + (t * p.K + j) * p.D + d]; }
  if (p.hasShared != 0u) {
    var g = 1.0;
    if (p.hasGate != 0u) { g = 1.0 / (1.0 + exp(-a[p.sgOff + t])); }
    acc += g * a[p.shOff + t * p.D + d];
  }
  a[p.outOff + t * p.D + d] = acc;
}
`);

// router: every routing mode of src/kernels/moe.ts (assembly/moe.ts), one 64-wide workgroup per token.
//   mode 0 softmax_topk: top k of the logits; w = softmax(logits)[pick], /Σ w when renorm.
//   mode 1 topk_softmax: top k of the logits; w = softmax over the k picked logits.
//   mode 2 sigmoid: s = σ(l); choice = s + bias (hasBias); with nGroup > 1 only the topkGroup groups with the
//     largest sum of their two best choices keep their values, the rest select with `fill`; top k of
//     choice; w = s[pick], / (Σ w + 1e-20) when renorm; picks re-ordered by w (desc, id asc).
//   Every mode multiplies w by `scaling`, then (hasEs) by c[esOff + pick], the picked expert's scale.
//   Ties go to the lowest index (groups too). Ids go to ids[idsOff + t·K …], weights to a[wOff + t·K …].
//   K ≤ 64, nGroup ≤ 64.
export const ROUTER_PARAMS = ['E', 'K', 'mode', 'renorm', 'logitsOff', 'wOff', 'idsOff', 'biasOff', 'hasBias', 'nGroup', 'topkGroup', 'scaling:f', 'fill:f', 'esOff', 'hasEs'];
export const routerWgsl = kernelSource(ROUTER_PARAMS, ['p', 'a', 'c', 'ids'], `
var<workgroup> rv: array<f32, 64>;
var<workgroup> ri: array<i32, 64>;
var<workgroup> sel: array<i32, 64>;
var<workgroup> keepG: array<u32, 64>;

fn sigm(x: f32) -> f32 { return 1.0 / (1.0 + exp(min(-x, 80.0))); }
fn biased(lb: u32, i: u32) -> f32 {
  var v = sigm(a[lb + i]);
  if (p.hasBias != 0u) { v += c[p.biasOff + i]; }
  return v;
}
fn choice(lb: u32, i: u32) -> f32 {
  if (p.mode != 2u) { return a[lb + i]; }
  if (p.nGroup > 1u && keepG[i / (p.E / p.nGroup)] == 0u) { return p.fill; }
  return biased(lb, i);
}
// Strictly after the previous pick (pv, pi) in (value desc, index asc) order; pi < 0: no pick yet.
fn after(v: f32, i: i32, pv: f32, pi: i32) -> bool { return pi < 0 || v < pv || (v == pv && i > pi); }
// Workgroup best of the lanes' (v, i): larger v, then lower i; i < 0 is empty. Result in rv[0], ri[0].
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
fn sum(v: f32, li: u32) -> f32 {
  workgroupBarrier();
  rv[li] = v;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (li < s) { rv[li] += rv[li + s]; }
    workgroupBarrier();
  }
  return rv[0];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = wg.x;
  let lb = p.logitsOff + t * p.E;
  if (p.mode == 2u && p.nGroup > 1u) {
    let gs = p.E / p.nGroup;
    var gv = 0.0;
    if (li < p.nGroup) {
      var b1 = -3.4e38;
      var b2 = -3.4e38;
      for (var i = li * gs; i < (li + 1u) * gs; i++) {
        let v = biased(lb, i);
        if (v > b1) { b2 = b1; b1 = v; } else if (v > b2) { b2 = v; }
      }
      gv = b1 + b2;
    }
    keepG[li] = 0u;
    var pv = 0.0;
    var pi = -1;
    for (var j = 0u; j < p.topkGroup; j++) {
      var cv = 0.0;
      var ci = -1;
      if (li < p.nGroup && after(gv, i32(li), pv, pi)) { cv = gv; ci = i32(li); }
      best(cv, ci, li);
      pv = rv[0];
      pi = ri[0];
      if (li == 0u) { keepG[u32(pi)] = 1u; }
    }
  }
  workgroupBarrier();
  var pv = 0.0;
  var pi = -1;
  for (var j = 0u; j < p.K; j++) {
    var cv = 0.0;
    var ci = -1;
    for (var i = li; i < p.E; i += 64u) {
      let v = choice(lb, i);
      if (after(v, i32(i), pv, pi) && (ci < 0 || v > cv)) { cv = v; ci = i32(i); }
    }
    best(cv, ci, li);
    pv = rv[0];
    pi = ri[0];
    if (li == 0u) { sel[j] = pi; }
  }
  workgroupBarrier();
  var s = 0.0;
  if (p.mode == 0u) {
    let m = a[lb + u32(sel[0])];
    var part = 0.0;
    for (var i = li; i < p.E; i += 64u) { part += exp(a[lb + i] - m); }
    s = sum(part, li);
  }
  if (li != 0u) { return; }
  let ob = t * p.K;
  var tot = 0.0;
  let m1 = a[lb + u32(sel[0])];
  for (var j = 0u; j < p.K; j++) {
    let l = a[lb + u32(sel[j])];
    var w = 0.0;
    if (p.mode == 0u) { w = exp(l - m1) / s; } else if (p.mode == 1u) { w = exp(l - m1); } else { w = sigm(l); }
    a[p.wOff + ob + j] = w;
    tot += w;
  }
  var den = 1.0;
  if (p.mode == 1u) { den = tot; } else if (p.renorm != 0u) { den = select(tot, tot + 1e-20, p.mode == 2u); }
  for (var j = 0u; j < p.K; j++) { a[p.wOff + ob + j] = a[p.wOff + ob + j] / den; }
  if (p.mode == 2u) {
    // Selection ran on the biased scores: order the picks by weight (insertion sort).
    for (var x = 1u; x < p.K; x++) {
      let wa = a[p.wOff + ob + x];
      let ia = sel[x];
      var y = i32(x) - 1;
      loop {
        if (y < 0) { break; }
        let wb = a[p.wOff + ob + u32(y)];
        let ib = sel[y];
        if (wb > wa || (wb == wa && ib < ia)) { break; }
        a[p.wOff + ob + u32(y + 1)] = wb;
        sel[y + 1] = ib;
        y--;
      }
      a[p.wOff + ob + u32(y + 1)] = wa;
      sel[y + 1] = ia;
    }
  }
  for (var j = 0u; j < p.K; j++) {
    ids[p.idsOff + ob + j] = u32(sel[j]);
    var ws = a[p.wOff + ob + j] * p.scaling;
    if (p.hasEs != 0u) { ws *= c[p.esOff + u32(sel[j])]; }
    a[p.wOff + ob + j] = ws;
  }
}
`);
