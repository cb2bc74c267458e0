// MoE routing and mixing on the GPU, so that a decode step never reads back routing decisions.
//
// route (softmax_topk): p = softmax(logits[E]); the top k by p (ties: lowest index) go to
//   ids[idsOff …] and their p (renormalised to sum 1 when renorm) to a[wOff …]; one row per workgroup,
//   selection done by invocation 0 (E is small).
// combine: out[d] = Σ_j w[j] · y[j, d]  (+ s(sg) · shared[d], s = sigmoid when hasGate).

import { kernelSource } from './common.wgsl';

export const ROUTE_PARAMS = ['T', 'E', 'K', 'logitsOff', 'wOff', 'idsOff', 'renorm'];
export const routeWgsl = kernelSource(ROUTE_PARAMS, ['p', 'a', 'ids'], `
@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wg: vec3u) {
  let t = wg.x;
  if (t >= p.T) { return; }
  let lb = p.logitsOff + t * p.E;
  var m = -3.4e38;
  for (var i = 0u; i < p.E; i++) { m = max(m, a[lb + i]); }
  var s = 0.0;
  for (var i = 0u; i < p.E; i++) { s += exp(a[lb + i] - m); }
  var prev = 3.4e38;
  var prevId = 0xffffffffu;
  var tot = 0.0;
  for (var j = 0u; j < p.K; j++) {
    var best = -1.0;
    var bi = 0u;
    for (var i = 0u; i < p.E; i++) {
      let v = exp(a[lb + i] - m) / s;
      // strictly after the previous pick in (value desc, index asc) order
      let after = v < prev || (v == prev && i > prevId);
      if (after && v > best) { best = v; bi = i; }
    }
    ids[p.idsOff + t * p.K + j] = bi;
    a[p.wOff + t * p.K + j] = best;
    tot += best;
    prev = best;
    prevId = bi;
  }
  if (p.renorm != 0u) {
    for (var j = 0u; j < p.K; j++) { a[p.wOff + t * p.K + j] = a[p.wOff + t * p.K + j] / tot; }
  }
}
`);

export const COMBINE_PARAMS = ['D', 'K', 'yOff', 'wOff', 'outOff', 'shOff', 'sgOff', 'hasShared', 'hasGate'];
export const combineWgsl = kernelSource(COMBINE_PARAMS, ['p', 'a'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  if (d >= p.D) { return; }
  var acc = 0.0;
  for (var j = 0u; j < p.K; j++) { acc += a[p.wOff + j] * a[p.yOff + j * p.D + d]; }
  if (p.hasShared != 0u) {
    var g = 1.0;
    if (p.hasGate != 0u) { g = 1.0 / (1.0 + exp(-a[p.sgOff])); }
    acc += g * a[p.shOff + d];
  }
  a[p.outOff + d] = acc;
}
`);
